"""The LLM simulator as a real HTTP server in its own process (the only fake: the LLM)."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from .ports import free_port


class SimulatorServer:
    def __init__(
        self,
        *,
        latency_ms: float = 0,
        dist: str = "fixed",
        seed: int | None = None,
        structured: str = "schema",
        max_concurrency: int = 0,
        tokens_per_s: float = 0,
        tools: bool = True,
    ) -> None:
        """`structured`, `max_concurrency`, `tokens_per_s`: behave as a real server of that
        kind (see the simulator's docstring)."""
        self.port = free_port()
        self.argv = [
            sys.executable, "-m", "aether_simulator", "--port", str(self.port),
            "--latency-ms", str(latency_ms), "--latency-dist", dist, "--structured", structured,
            "--max-concurrency", str(max_concurrency), "--tokens-per-s", str(tokens_per_s),
        ] + ([] if tools else ["--no-tools"])
        if seed is not None:
            self.argv += ["--seed", str(seed)]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> SimulatorServer:
        self.process = subprocess.Popen(self.argv)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("simulator did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def requests(self, **query: str) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/requests", params=query, timeout=10).json()["requests"]

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_sim/stats", timeout=10).json()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_sim/reset", timeout=10)
