"""Hosts on one machine: Linux network namespaces wired to a switch, and the faults of a network
(a host cut off, a slow link) made on them with iproute2 (`ip`, `tc`). Root only.

Every namespace of a run is named `aether-p<pid>-<hex>-<host>`: unique per run, and a run that
died before cleaning up is recognised by its pid and swept by the next one. The switch is a
bridge in a namespace of its own, so nothing (no interface, no address, no route) is added to
the machine's own network namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

PREFIX = "aether-p"
_RUN = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+-")
CLONE_NEWNET = 0x40000000


class Unavailable(RuntimeError):
    """Namespaces cannot be made here; the message says why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def tc(namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["tc", "-n", namespace, *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)} in {namespace}: {result.stderr.strip() or result.returncode}")
    return result


def why_unavailable() -> str | None:
    """None when this process can make namespaces and links, else the reason."""
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()}); CI runs as root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install iproute2 (apt-get install iproute2)"
    probe = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    try:
        veth = ip("-n", probe, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb", check=False)
        if veth.returncode != 0:
            return f"veth pairs cannot be made: {veth.stderr.strip()}"
        bridge = ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"bridges cannot be made: {bridge.stderr.strip()}"
    finally:
        ip("netns", "del", probe, check=False)
    return None


def namespaces() -> list[str]:
    listed = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def pids_in(namespace: str) -> list[int]:
    listed = ip("netns", "pids", namespace, check=False).stdout
    return [int(p) for p in listed.split() if p.isdigit()]


def remove(namespace: str) -> None:
    """End every process still in `namespace` (all started by the run that made it), then
    delete it, which deletes its veths (and with the switch, the bridge)."""
    for _ in range(3):
        pids = [p for p in pids_in(namespace) if p != os.getpid()]  # a thread of ours may be in it
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    ip("netns", "del", namespace, check=False)


def sweep_stale() -> list[str]:
    """Remove the namespaces of earlier runs whose process is gone (killed before cleaning up)."""
    swept = []
    for namespace in namespaces():
        match = _RUN.match(namespace)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            remove(namespace)
            swept.append(namespace)
    return swept


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    port: str
    """Its cable's end on the switch (the switch side of its veth pair)."""


class Network:
    """A switch and hosts on `subnet`.0/24, each host a namespace with one interface, `eth0`."""

    def __init__(self, subnet: str = "10.77.0") -> None:
        self.subnet = subnet
        self.run = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.switch = f"{self.run}-sw"
        self.hosts: dict[str, Host] = {}
        self.created: list[str] = []
        self.netem = False
        """Whether `tc netem` works here (the kernel may lack sch_netem)."""

    def create(self) -> Network:
        reason = why_unavailable()
        if reason:
            raise Unavailable(reason)
        sweep_stale()
        self._namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def _namespace(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        self.created.append(namespace)
        ip("-n", namespace, "link", "set", "lo", "up")

    def add_host(self, name: str, octet: int) -> Host:
        host = Host(name, f"{self.run}-{name}", f"{self.subnet}.{octet}", name)
        self._namespace(host.namespace)
        # Both ends made directly in their namespaces: nothing appears in the machine's own.
        ip("link", "add", "name", "eth0", "netns", host.namespace, "type", "veth", "peer", "name", host.port, "netns", self.switch)
        ip("-n", self.switch, "link", "set", host.port, "master", "br0")
        ip("-n", self.switch, "link", "set", host.port, "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        self.hosts[name] = host
        if len(self.hosts) == 1:
            self.netem = self._netem_works(host)
        return host

    def _netem_works(self, host: Host) -> bool:
        made = tc(host.namespace, "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms", check=False)
        if made.returncode != 0:
            return False
        tc(host.namespace, "qdisc", "del", "dev", "eth0", "root", check=False)
        return True

    def argv(self, host: str, argv: list[str]) -> list[str]:
        """`argv` run on `host` (`ip netns exec` execs it: the pid is the program's own)."""
        return ["ip", "netns", "exec", self.hosts[host].namespace, *argv]

    # -- faults ------------------------------------------------------------------------------
    def cut(self, host: str) -> None:
        """Unplug the host's cable at the switch: every packet to or from it is dropped, its
        connections stay open (no reset), as when a machine drops off the network."""
        ip("-n", self.switch, "link", "set", self.hosts[host].port, "down")

    def plug(self, host: str) -> None:
        ip("-n", self.switch, "link", "set", self.hosts[host].port, "up")

    def slow(self, host: str, *, delay_ms: int = 200, loss_pct: float = 5.0, rate: str = "512kbit") -> str:
        """Slow the host's link both ways; returns what was applied. `netem` (fixed delay and
        random loss) where the kernel has it; otherwise `tbf`: a thin link whose queue holds up
        to `delay_ms` of traffic and drops what does not fit (delay and loss under load only)."""
        if self.netem:
            shape = ["netem", "delay", f"{delay_ms}ms", f"{delay_ms // 10}ms", "loss", f"{loss_pct}%"]
        else:
            shape = ["tbf", "rate", rate, "burst", "8kb", "latency", f"{delay_ms}ms"]
        for namespace, device in self._link(host):
            tc(namespace, "qdisc", "add", "dev", device, "root", *shape)
        return "tc " + " ".join(shape)

    def unslow(self, host: str) -> None:
        for namespace, device in self._link(host):
            tc(namespace, "qdisc", "del", "dev", device, "root", check=False)

    def _link(self, host: str) -> list[tuple[str, str]]:
        h = self.hosts[host]
        return [(h.namespace, "eth0"), (self.switch, h.port)]

    # -- this process on a host -----------------------------------------------------------------
    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """This thread's sockets are made on `host` until the block ends (setns(2) is
        per thread; threads started meanwhile by this one inherit it)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.hosts[host].namespace}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
            os.close(own)

    def destroy(self) -> None:
        for namespace in reversed(self.created):
            remove(namespace)
        self.created.clear()
