import functools
import os

import pytest

from tests.support.nats import NatsServer, declared
from tests.support.stack import Stack

# Services built in this process read the environment: a developer's own OpenTelemetry setup
# must not turn tracing on in tests that expect it off (tests that want it set it per stack).
for _name in [n for n in os.environ if n.startswith("OTEL_")]:
    del os.environ[_name]


@functools.cache
def _docker() -> bool:
    from tests.support.containers import docker_available

    return docker_available()


def start_nats(*, declare: bool = True):
    """A real nats-server: in a locally built container when Docker is there, else the binary.
    `declare`: with the topology declared, as `make up` does before the services start."""
    from tests.support.containers import NatsContainer, require_docker

    if _docker():
        server = NatsContainer().start()
    elif require_docker():
        pytest.fail("AETHER_REQUIRE_DOCKER=1 but no Docker engine answers")
    else:
        server = NatsServer().start()
    return declared(server) if declare else server


@pytest.fixture(scope="session")
def nats_server():
    server = start_nats()
    yield server
    server.stop()


@pytest.fixture
def fresh_nats():
    """A NATS server of its own, for tests that must not see each other's streams."""
    server = start_nats()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def simulator():
    from tests.support.simulator import SimulatorServer

    server = SimulatorServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_images() -> dict[str, str]:
    """Every service's image (name → id), built once per session on the base made here (no
    registry): the agent containers' tests and the images' own tests use the same build. Cold,
    it takes minutes on a copying storage driver; the first test that asks pays for it."""
    from tests.support.containers import need_docker

    need_docker()
    from aether_devstack.images import LOCAL_BASE, build_images

    return build_images(base=LOCAL_BASE)


@pytest.fixture(scope="session")
def stack():
    """One stack for the end-to-end tests that do not need their own configuration (with the UI)."""
    running = Stack(ui=True).start()
    yield running
    running.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test, so a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# `make test` runs on two workers (pytest-xdist, --dist loadgroup). A module's tests stay on one
# worker, so a module-scoped stack starts once; the tests that build, tag or set aside the
# service images (.build/images, the aether-* tags) share one group, so no two of them run at once.
_IMAGE_TESTS = (
    "tests/integration/test_images.py",
    "tests/e2e/test_agents_docker.py",
    "tests/e2e/test_devstack_exit.py::test_a_ctrl_c_during_the_agent_image_build_ends_the_build_too",
)


# The longest groups first, so that neither worker is left with a long one at the end (seconds
# on one worker, measured here: images ~1250 cold, the rest under 250 each).
_LONGEST_FIRST = (
    "images",
    "tests/e2e/test_devstack_exit.py",
    "tests/e2e/test_tracing.py",
    "tests/e2e/test_human_in_the_loop.py",
    "tests/e2e/test_bench.py",
    "tests/e2e/test_agents.py",
    "tests/e2e/test_a2a.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into node ids
def pytest_collection_modifyitems(config, items):
    groups = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        groups[item.nodeid] = "images" if item.nodeid.startswith(_IMAGE_TESTS) else module
        item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
    if config.getoption("dist", "no") == "loadgroup":
        rank = {group: i for i, group in enumerate(_LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(groups[item.nodeid], len(rank)))  # stable: in order within
