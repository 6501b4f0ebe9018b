import pytest

from tests.support.nats import NatsServer
from tests.support.stack import Stack


@pytest.fixture(scope="session")
def nats_server():
    server = NatsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack():
    """One stack for the end-to-end tests that do not need their own configuration."""
    running = Stack().start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def simulator():
    from tests.support.simulator import SimulatorServer

    server = SimulatorServer().start()
    yield server
    server.stop()


@pytest.fixture
def fresh_nats():
    """A NATS server of its own, for tests that must not see each other's streams."""
    server = NatsServer().start()
    yield server
    server.stop()
