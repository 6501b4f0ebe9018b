"""The test suite's own servers start even when a port they were given is taken meanwhile (CI
runs two workers beside image builds; a port handed out by `free_port` can be bound by another
process before nats-server binds it)."""

from __future__ import annotations

import socket

import pytest

from aether_devstack.ports import free_port
from tests.support.nats import NatsCluster, NatsServer, PortTaken


def _occupy(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice():
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and max(ports) < low


def test_a_server_whose_port_was_taken_starts_on_others():
    server = NatsServer()
    taken = server.monitor_port
    with _occupy(taken):
        server.start()
        try:
            assert server.monitor_port != taken
        finally:
            server.stop()


def test_a_restart_keeps_its_ports_and_says_when_one_is_taken():
    server = NatsServer().start()
    port = server.port
    server.stop()
    with _occupy(port), pytest.raises(PortTaken):
        server.start()  # clients know this address: it must not move


def test_a_cluster_whose_route_port_was_taken_starts_anew():
    cluster = NatsCluster()
    route = int(cluster.nodes[1].extra_config.split("listen: 127.0.0.1:")[1].split()[0])
    with _occupy(route):
        cluster.start()
        try:
            assert str(route) not in cluster.nodes[0].extra_config and all(node.started for node in cluster.nodes)
        finally:
            cluster.stop()
