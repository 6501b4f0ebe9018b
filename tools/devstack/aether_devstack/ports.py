"""Loopback ports for the servers the dev stack, the tests and the benchmark start."""

from __future__ import annotations

import os
import socket

_PORTS_LOW, _PORTS_HIGH = 12_000, 32_000
_BLOCK = 40
_taken: set[int] = set()


def free_port() -> int:
    """A loopback port free now, for a server this process is about to start.

    Not one the kernel picks (`bind(0)`): those come from the ephemeral range, where any client's
    outgoing connection may take the port before the server binds it, and two processes asking
    at once may be handed the same one. These lie below that range (32768 and up on Linux), in a
    block of this process's own (by pid) first, and none is handed out twice by one process.
    """
    blocks = (_PORTS_HIGH - _PORTS_LOW) // _BLOCK
    first = os.getpid() % blocks
    for block in range(blocks):
        start = _PORTS_LOW + (first + block) % blocks * _BLOCK
        for port in range(start, start + _BLOCK):
            if port in _taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _taken.add(port)
            return port
    raise OSError(f"no free loopback port in {_PORTS_LOW}-{_PORTS_HIGH}")
