"""The devstack's secrets: files only their owner can read from the moment they exist, passwords
kept per data dir, and children that start from an environment without any secret (issue 19)."""

import json
import os
import stat
from pathlib import Path

import pytest

from aether_devstack import credentials
from aether_devstack.__main__ import with_credentials
from aether_devstack.supervisor import ChildSpec, Supervisor, child_environment


@pytest.fixture
def open_umask():
    """The most permissive umask: a file's mode is then what its creator asked for."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def modes_at_creation(monkeypatch):
    """The mode of every file the moment `os.open` made it, before anything was written."""
    seen: dict[str, int] = {}
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT:
            seen[os.fspath(path)] = stat.S_IMODE(os.fstat(fd).st_mode)
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    return seen


def test_the_api_key_file_is_owner_only_from_its_creation_and_kept(tmp_path, open_umask, modes_at_creation):
    key = credentials.api_key(tmp_path)
    path = tmp_path / credentials.API_KEY_FILE
    assert modes_at_creation == {str(path): 0o600}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32 and credentials.api_key(tmp_path) == key


def test_nats_passwords_are_made_once_per_data_dir_and_a_new_user_gets_one(tmp_path, open_umask, modes_at_creation):
    first = credentials.nats_passwords(tmp_path, ["gateway", "planner"])
    path = tmp_path / credentials.NATS_USERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.nats_passwords(tmp_path, ["gateway", "planner"]) == first
    more = credentials.nats_passwords(tmp_path, ["gateway", "planner", "topology"])
    assert {k: more[k] for k in first} == first and more["topology"] not in first.values()
    assert json.loads(path.read_text()) == more
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(modes_at_creation.values()) == {0o600}, modes_at_creation
    assert [p.name for p in tmp_path.iterdir()] == [credentials.NATS_USERS_FILE], "a temporary file was left"


def test_children_start_from_an_environment_without_secrets():
    environ = {
        "PATH": "/usr/bin", "HOME": "/home/dev", "LANG": "C.UTF-8", "PYTHONPATH": "/src",
        "AETHER_LOG_LEVEL": "DEBUG", "AETHER_SIM_PORT": "8100", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318",
        "DOCKER_HOST": "unix:///run/docker.sock",
        "AETHER_API_KEYS": "dev:k:admin", "AETHER_API_KEYS_FILE": "/keys", "AETHER_API_KEY": "k",
        "AETHER_NATS_URL": "nats://admin:pw@h:4222", "AETHER_AGENT_NATS_URL": "nats://agent:pw@h:4222",
        "OPENAI_API_KEY": "sk-secret", "OPENAI_BASE_URL": "http://llm", "AWS_SECRET_ACCESS_KEY": "aws",
        "GITHUB_TOKEN": "ghp",
    }
    assert child_environment(environ) == {
        "PATH": "/usr/bin", "HOME": "/home/dev", "LANG": "C.UTF-8", "PYTHONPATH": "/src",
        "AETHER_LOG_LEVEL": "DEBUG", "AETHER_SIM_PORT": "8100", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4318",
        "DOCKER_HOST": "unix:///run/docker.sock",
    }
    supervisor = Supervisor(Path("/nonexistent/devstack.json"), environ=environ)
    env = supervisor.environment(ChildSpec("planner", ["x"], {"OPENAI_API_KEY": "sk-secret", "AETHER_LOG_LEVEL": None}))
    assert env["OPENAI_API_KEY"] == "sk-secret" and "AETHER_LOG_LEVEL" not in env and "AETHER_API_KEYS" not in env


def test_an_agents_url_gets_the_agents_credentials_unless_it_names_some():
    assert with_credentials("nats://127.0.0.1:4222", "agent", "pw") == "nats://agent:pw@127.0.0.1:4222"
    assert with_credentials("nats://a:1, nats://b:2", "agent", "pw") == "nats://agent:pw@a:1,nats://agent:pw@b:2"
    assert with_credentials("nats://x:y@h:1", "agent", "pw") == "nats://x:y@h:1"
    assert with_credentials("h:1", "agent", "pw") == "agent:pw@h:1"
