"""Every service's image, built from its stage of the one Dockerfile on a Python base made here (no registry), runs
hardened as Kubernetes runs it (non-root, read-only root, no capabilities) against a real NATS:
healthy by its own HEALTHCHECK, together able to complete a task, and stopped cleanly by SIGTERM.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.containers import docker_client, need_docker
from tests.support.plans import scripted, subtask
from tests.support.ports import free_port

# A cold build of every image (a new lock, a fresh machine) takes minutes on a copying storage
# driver and two shared cores; the first test pays for it.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

NATS_SERVICES = ("planner", "executor", "synthesizer")
API_KEY = "image-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def images(service_images) -> dict[str, str]:
    return service_images


@pytest.fixture(scope="module")
def running(images, simulator):
    """The four images on the host network, so they reach NATS and the simulator on loopback."""
    from tests.conftest import start_nats

    nats = start_nats(declare=False)
    client = docker_client()
    ports = {name: free_port() for name in ("gateway", *NATS_SERVICES)}
    containers = {}
    try:
        # What the gateway pods' init container runs on Kubernetes: the topology, declared once.
        client.containers.run(
            images["gateway"],
            ["topology"],
            name=f"aether-image-test-topology-{ports['gateway']}",
            network_mode="host",
            environment={"AETHER_NATS_URL": nats.url, "AETHER_INSTANCE_ID": "topology-image-test"},
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit="256m",
            labels={"dev.aether.test": "images"},
            remove=True,
        )
        for name in ports:
            image_id = images[name]
            env = {
                "AETHER_NATS_URL": nats.url,
                "AETHER_INSTANCE_ID": f"{name}-image-test",
                "OPENAI_BASE_URL": simulator.base_url,
                "OPENAI_API_KEY": "test",
            }
            if name == "gateway":
                env |= {
                    "AETHER_HTTP_HOST": "127.0.0.1",
                    "AETHER_HTTP_PORT": str(ports[name]),
                    "AETHER_API_KEYS": f"images:{API_KEY}",
                }
            else:
                env |= {"AETHER_PROBE_HOST": "127.0.0.1", "AETHER_PROBE_PORT": str(ports[name])}
            containers[name] = client.containers.run(
                image_id,
                detach=True,
                name=f"aether-image-test-{name}-{ports[name]}",
                network_mode="host",
                environment=env,
                read_only=True,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit="256m",
                pids_limit=128,
                labels={"dev.aether.test": "images"},
            )
        yield containers, ports
    finally:
        for container in containers.values():
            container.remove(force=True)
        nats.stop()


def wait_healthy(container, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        state = container.attrs["State"]
        if state["Status"] == "exited":
            raise AssertionError(f"{container.name} exited:\n{container.logs().decode()[-3000:]}")
        if state.get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(0.5)
    raise AssertionError(f"{container.name} not healthy:\n{container.logs().decode()[-3000:]}")


def process_uid(container) -> int:
    """The effective uid of the container's main process, read from the host's /proc."""
    with open(f"/proc/{container.attrs['State']['Pid']}/status") as status:
        line = next(line for line in status if line.startswith("Uid:"))
    return int(line.split()[2])


def test_every_service_has_an_image(images):
    assert {"gateway", "planner", "executor", "synthesizer"} <= images.keys()


def test_the_images_share_every_layer_but_their_last(images):
    """One Dockerfile (issue 17): the services' images differ only in their last stage, so a
    node pulling all four stores their common layers once."""
    client = docker_client()
    inspected = {name: client.images.get(image_id).attrs for name, image_id in images.items()}
    layers = {name: attrs["RootFS"]["Layers"] for name, attrs in inspected.items()}
    assert layers["planner"] == layers["executor"] == layers["synthesizer"]
    assert layers["gateway"][:-1] == layers["planner"] and len(layers["gateway"]) == len(layers["planner"]) + 1
    for name, attrs in inspected.items():
        assert attrs["Config"]["Entrypoint"] == ["python", "-m", f"aether_{name}"], name
    sizes = {name: round(attrs["Size"] / 1e6) for name, attrs in inspected.items()}
    print(f"\nimage sizes (MB, each counting the shared layers): {sizes}")


def test_each_image_runs_hardened_and_becomes_healthy_against_nats(running):
    containers, ports = running
    for name, container in containers.items():
        wait_healthy(container)
        config = container.attrs["Config"]
        assert config["User"] == "10001:10001", name
        assert process_uid(container) == 10001, name
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"], name
        base = f"http://127.0.0.1:{ports[name]}"
        assert httpx.get(f"{base}/livez", timeout=5).status_code == 200, name
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200, name


def test_the_images_together_complete_a_task(running):
    containers, ports = running
    for container in containers.values():
        wait_healthy(container)
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    plan = scripted("Images", [subtask("api"), subtask("tests", "testing-expert", ["api"])])
    created = httpx.post(f"{gateway}/api/orchestrate/task", json={"description": plan}, headers=AUTH, timeout=10)
    assert created.status_code == 202, created.text
    deadline = time.monotonic() + 90
    task: dict = {}
    while time.monotonic() < deadline:
        task = httpx.get(
            f"{gateway}/api/orchestrate/task/{created.json()['id']}", headers=AUTH, timeout=10
        ).json()
        if task["status"] in ("completed", "failed"):
            break
        time.sleep(0.2)
    assert task["status"] == "completed", task.get("logs")
    assert {s["agent_id"] for s in task["subtasks"]} == {"executor-image-test"}
    assert "api (python-backend)" in task["final_result"]
    assert "tests (testing-expert)" in task["final_result"]


@pytest.mark.parametrize("name", ["gateway", *NATS_SERVICES])
def test_sigterm_stops_each_image_cleanly(running, name):
    """Kubernetes stops a pod with SIGTERM; a Python process as PID 1 ignores it unless it
    handles it, and the pod would be killed at the end of its grace period instead."""
    containers, _ = running
    container = containers[name]
    wait_healthy(container)
    container.stop(timeout=60)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-3000:]


def test_a_base_no_registry_serves_is_replaced_by_the_local_one_in_one_line():
    """`make up` with the docker backend on a machine without a registry: the default base cannot
    be pulled, so the local one is used, and the user reads why in one line, not a DNS error."""
    need_docker()
    from aether_devstack.images import LOCAL_BASE, ImageError, resolve_base

    unpullable = "aether-no-such-registry.invalid/python:3.11-slim"
    said: list[str] = []
    assert resolve_base(unpullable, say=said.append, replaceable=(unpullable,)) == LOCAL_BASE
    assert len(said) == 1 and unpullable in said[0] and LOCAL_BASE in said[0], said
    assert "dial tcp" not in said[0] and "\n" not in said[0]

    # Any other base is not swapped behind the user's back: an error naming it and the way out.
    with pytest.raises(ImageError) as refused:
        resolve_base(unpullable, say=said.append, replaceable=())
    assert unpullable in str(refused.value) and f"BASE_IMAGE={LOCAL_BASE}" in str(refused.value)
    assert len(said) == 1
