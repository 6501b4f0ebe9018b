"""Issue 3 on a real Docker engine: agents as hardened containers built from
the executor stage of deploy/docker/Dockerfile (on a base made here: no registry is reachable)."""

import asyncio

import pytest

from tests.support.agents import agent_events, experts, pool, wait_for
from tests.support.containers import docker_client
from tests.support.plans import scripted, subtask
from tests.support.stack import Stack

# The first test's setup builds the service images once for the session (and, on a fresh machine,
# their debootstrap base): minutes on vfs, counted by pytest-timeout against that test.
pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(1800)]

DOCKER_ENV = {
    "AETHER_AGENT_BACKEND": "docker",
    "AETHER_POOL_MAX": "2",
    "AETHER_POOL_IDLE_TIMEOUT_S": "30",
    "AETHER_POOL_INTERVAL_S": "0.5",
    "AETHER_POOL_OVERRIDES": "devops-expert:min=1",
}


@pytest.fixture(scope="module")
def agent_image(service_images):
    return service_images["executor"]


def scope_of(stack: Stack) -> str:
    from aether_container_manager.settings import ContainerManagerSettings

    return ContainerManagerSettings(nats_url=stack.nats_url).scope


@pytest.fixture(scope="module")
def docker_stack(agent_image):
    running = Stack(env=DOCKER_ENV).start(timeout=240)
    yield running
    running.stop()
    leftovers = [c.name for c in managed_containers(scope_of(running))]
    assert not leftovers, f"containers outlived the stack: {leftovers}"


def managed_containers(scope_filter: str | None = None) -> list:
    labels = ["aether.managed=true"] + ([f"aether.scope={scope_filter}"] if scope_filter else [])
    return docker_client().containers.list(all=True, filters={"label": labels})


async def test_subtasks_of_three_types_run_in_containers_of_those_types(docker_stack):
    plan = scripted(
        "Three types in containers",
        [subtask("db", "database-expert"), subtask("api", "python-backend", ["db"]), subtask("ui", "react-frontend", ["db"])],
    )
    async with docker_stack.client() as client:
        task = await docker_stack.wait_task(client, (await docker_stack.submit(client, plan))["id"], timeout=240)
        agents = {a["id"]: a for a in await pool(client)}
    assert task["status"] == "completed", task["logs"]
    containers = {c.name: c for c in managed_containers()}
    for s in task["subtasks"]:
        agent = agents[s["agent_id"]]
        assert agent["backend"] == "docker" and agent["agent_type"] == s["agent_type"]
        container = containers[agent["runtime_id"]]
        assert container.labels["aether.agent-type"] == s["agent_type"]
        assert container.labels["aether.agent-id"] == agent["id"]


async def test_an_agent_container_is_hardened(docker_stack):
    async with docker_stack.client() as client:
        [warm] = await wait_for(lambda: experts(client, "devops-expert"), timeout=120, what="a warm devops agent")
    container = docker_client().containers.get(warm["runtime_id"])
    host = container.attrs["HostConfig"]
    assert container.attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] == 512 * 1024 * 1024 and host["NanoCpus"] == 1_000_000_000 and host["PidsLimit"] == 256
    assert "/tmp" in host["Tmpfs"] and host["Privileged"] is False
    # what the process inside actually has, not only what was asked for
    status = container.exec_run(["python", "-c", "print(open('/proc/1/status').read())"]).output.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[1] == "10001"  # effective uid
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    write = container.exec_run(["python", "-c", "open('/opt/aether/x', 'w')"])
    assert write.exit_code != 0 and b"Read-only file system" in write.output


async def busy_agent(client, task_id: str) -> dict:
    async def find():
        for agent in await experts(client):
            if agent["current_task"] == task_id and agent["status"] == "busy":
                return agent
        return None

    return await wait_for(find, timeout=120, interval=0.1, what="an agent busy with the task")


async def test_docker_kill_of_a_busy_agent_and_the_task_still_completes(docker_stack):
    plan = scripted("Kill the container", [subtask("long", "fullstack", sim="latency_ms=3000")])
    async with docker_stack.client() as client:
        created = await docker_stack.submit(client, plan)
        victim = await busy_agent(client, created["id"])
        await asyncio.to_thread(lambda: docker_client().containers.get(victim["runtime_id"]).kill())
        task = await docker_stack.wait_task(client, created["id"], timeout=180)
    assert task["status"] == "completed", task["logs"]
    long = task["subtasks"][0]
    assert long["agent_id"] != victim["id"] and long["attempts"] == 2
    assert sum("completed by" in line for line in task["logs"]) == 1
    failed = [e for e in await agent_events(docker_stack.nats_url) if e.agent_id == victim["id"] and e.kind == "failed"]
    assert failed and "137" in failed[0].reason


async def test_deleting_a_busy_agent_container_hands_its_subtask_over(docker_stack):
    plan = scripted("Delete the container", [subtask("long", "testing-expert", sim="latency_ms=3000")])
    async with docker_stack.client() as client:
        created = await docker_stack.submit(client, plan)
        victim = await busy_agent(client, created["id"])
        response = await client.delete(f"/api/agents/{victim['id']}")
        assert response.status_code == 202, response.text
        task = await docker_stack.wait_task(client, created["id"], timeout=180)
    assert task["status"] == "completed", task["logs"]
    assert task["subtasks"][0]["agent_id"] != victim["id"] and task["subtasks"][0]["attempts"] == 2

    async def removed():
        return victim["runtime_id"] not in {c.name for c in managed_containers()}

    await wait_for(removed, timeout=60, what="the container removed")


async def test_a_container_manager_restart_leaves_no_orphaned_container(agent_image):
    stack = Stack(env={**DOCKER_ENV, "AETHER_POOL_OVERRIDES": "devops-expert:min=2"}).start(timeout=240)
    scope = None
    try:
        async with stack.client() as client:
            warm = await wait_for(
                lambda: _at_least(experts(client, "devops-expert"), 2), timeout=180, what="two warm agents"
            )
            names = {a["runtime_id"] for a in warm}
            scope = scope_of(stack)
            assert docker_client().containers.get(next(iter(names))).labels["aether.scope"] == scope
            old = stack.kill("container-manager")
            await stack.wait_restarted("container-manager", old)
            await asyncio.sleep(5)
            after = {a["runtime_id"] for a in await experts(client, "devops-expert")}
            assert after == names, "adopted, not replaced"
            assert {c.name for c in managed_containers(scope)} == names
    finally:
        stack.stop()
    assert scope is not None
    leftovers = [c.name for c in managed_containers(scope)]
    assert not leftovers, f"containers outlived the stack: {leftovers}"


async def _at_least(coro, n):
    found = await coro
    return found if len(found) >= n else None
