"""A built-in OpenAI-compatible LLM simulator: `POST /v1/chat/completions` (JSON mode, streaming,
usage), `GET /v1/models`. It plans by matching the agent templates' keywords, and every result
it returns says plainly that it is simulated.

It is a plain ASGI app (no framework) so that with zero latency it costs a fraction of a
millisecond per request and can serve as the benchmark's LLM.

Behaviour can be scripted from inside the prompt, so tests and the benchmark drive it through
Aether's real API:

- a line `SIM-PLAN: {json}` in the task description makes the planner reply with that plan, and
  `SIM-REPLAN: {json}` with that replacement sub-plan when asked to replan a failed subtask
  (default: one subtask doing the failed one's work, without its directives);
- `[[sim key=value ...]]` in a subtask's (or the task's) description sets, for requests whose
  prompt contains it: `latency_ms`, `fail` (an HTTP status) with `times` (the first N requests
  of that role, task and subtask; default every one), `malformed=1` (invalid JSON once, for the
  repair path), `empty=1`, `files=<n>` (how many files an expert writes), `path=<path>` (the
  file an expert writes), `file_bytes=<n>` (each file padded to about n bytes), `hostile=1`
  (the reply adds files with hostile paths and an unterminated block, for the parser).

Every simulated file names the subtask that wrote it, so parallel subtasks writing one path
conflict; the synthesis resolves every conflict its prompt lists (`### <path>: conflict between`)
by writing the file again, as Jason is asked to.

Aether's prompts frame the texts it did not write with a per-request nonce (aether_core.prompting):
the simulator reads the task, the subtask and the failed subtask of a replan from those frames,
and its headings only from outside them, so a result or a description cannot steer it. A prompt
without frames (a hand-written one, the benchmark's baselines) is read by its `<task>` block and
`Your subtask (id): …` line.

Test hooks: `GET /_sim/requests` (recorded requests, filter by `task_id`, `role`), `GET
/_sim/stats`, `POST /_sim/reset`, `POST /_sim/outage?seconds=60` (every completion a 503 meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aether_core import prompting
from aether_core.templates import BUILTIN_TEMPLATES, match_template

SIMULATED_NOTICE = (
    "> **Simulated result.** Produced by Aether's built-in LLM simulator, not by a language "
    "model: set `OPENAI_API_KEY` for real results."
)
DIRECTIVE = re.compile(r"\[\[sim\s+([^\]]*)\]\]")
PLAN_LINE = re.compile(r"^\s*SIM-PLAN:\s*(\{.*\})\s*$", re.MULTILINE)
REPLAN_LINE = re.compile(r"^\s*SIM-REPLAN:\s*(\{.*\})\s*$", re.MULTILINE)
TYPE_LINE = re.compile(r"^- ([a-z0-9][a-z0-9_-]*): ", re.MULTILINE)
DEP_RESULT = re.compile(r"^### Result of (\S+) \(([^)]+)\)", re.MULTILINE)
SUBTASK_LINE = re.compile(r"^Your subtask \(([^)]+)\): (.*)$", re.MULTILINE)
CONFLICT_LINE = re.compile(r"^### (\S+): conflict between (.+)$", re.MULTILINE)
MISSING_LINE = re.compile(r"^- (\S+) \(([^)]+)\):$", re.MULTILINE)
COMMENT = {"sql": "--", "python": "#", "tsx": "//", "dockerfile": "#", "text": "#"}
HOSTILE_BLOCKS = [
    ("text", "../../escaped.txt"),
    ("text", "/etc/aether-owned"),
    ("text", ".git/hooks/post-checkout"),
    ("text", "CON"),
    ("text", "nul.txt"),
    ("text", "a\\..\\..\\windows.txt"),
    ("text", "link -> /etc/passwd"),
]

# The order a simulated plan builds things in, and what each part needs first.
PIPELINE = ["database-expert", "python-backend", "react-frontend", "fullstack", "devops-expert", "testing-expert"]
NEEDS = {
    "python-backend": ["database-expert"],
    "react-frontend": ["python-backend"],
    "fullstack": ["python-backend", "react-frontend"],
    "devops-expert": ["python-backend", "react-frontend", "fullstack"],
    "testing-expert": ["python-backend", "react-frontend", "fullstack", "database-expert"],
}
FILE_FOR = {
    "database-expert": ("sql", "db/schema.sql", "-- simulated schema\nCREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT NOT NULL);\n"),
    "python-backend": ("python", "app/main.py", "# simulated service\nfrom fastapi import FastAPI\n\napp = FastAPI()\n\n\n@app.get('/items')\nasync def items() -> list[dict]:\n    return []\n"),
    "react-frontend": ("tsx", "ui/src/App.tsx", "// simulated component\nexport default function App() {\n  return <h1>Items</h1>;\n}\n"),
    "devops-expert": ("dockerfile", "Dockerfile", "# simulated image\nFROM python:3.12-slim\nCOPY . /app\nCMD [\"python\", \"-m\", \"app\"]\n"),
    "fullstack": ("python", "app/wiring.py", "# simulated glue\nCONFIG = {'api': '/api'}\n"),
    "testing-expert": ("python", "tests/test_app.py", "# simulated test\ndef test_simulated() -> None:\n    assert True\n"),
}


@dataclass
class SimConfig:
    latency_ms: float = 0.0
    latency_dist: str = "fixed"  # fixed | lognormal
    sigma: float = 0.5
    seed: int | None = None
    record_limit: int = 5000


@dataclass
class Recorded:
    at: float
    role: str
    task_id: str | None
    subtask_id: str | None
    agent_type: str | None
    model: str
    headers: dict[str, str]
    messages: list[dict[str, Any]]
    status: int
    json_mode: bool
    stream: bool


@dataclass
class SimState:
    config: SimConfig
    rng: random.Random = field(init=False)
    requests: deque = field(init=False)
    counters: Counter = field(default_factory=Counter)
    """Requests per role."""
    seen: Counter = field(default_factory=Counter)
    """Requests per (role, task, subtask): what `times=` counts."""
    in_flight: int = 0
    max_in_flight: int = 0
    down_until: float = 0.0
    """While `time.monotonic()` is below this, every completion is a 503 (an outage)."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.requests = deque(maxlen=self.config.record_limit)


def directives(text: str, role: str) -> dict[str, str]:
    """`[[sim k=v]]` options for `role`; a key may be qualified (`planner.latency_ms=5`)."""
    plain: dict[str, str] = {}
    qualified: dict[str, str] = {}
    for match in DIRECTIVE.finditer(text):
        for token in match.group(1).split():
            key, _, value = token.partition("=")
            value = value.strip() or "1"
            scope, dot, name = key.strip().partition(".")
            if not dot:
                plain[scope] = value
            elif scope == role:
                qualified[name] = value
    return {**plain, **qualified}


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _latency_s(state: SimState, opts: dict[str, str]) -> float:
    if "latency_ms" in opts:
        return max(0.0, float(opts["latency_ms"])) / 1000
    mean = state.config.latency_ms
    if mean <= 0:
        return 0.0
    if state.config.latency_dist == "lognormal":
        sigma = state.config.sigma
        mu = math.log(mean) - sigma**2 / 2
        return state.rng.lognormvariate(mu, sigma) / 1000
    return mean / 1000


def simulated_plan(description: str, types: list[str]) -> dict[str, Any]:
    known = [t for t in BUILTIN_TEMPLATES if t.type in types] or list(BUILTIN_TEMPLATES)
    words = set(re.findall(r"[a-z0-9+#.-]+", description.lower()))
    chosen = [t.type for t in known if t.type != "fullstack" and words.intersection(t.tags)]
    if not chosen:
        chosen = [match_template(description, known)]
    order = [t for t in PIPELINE if t in chosen] + [t for t in chosen if t not in PIPELINE]
    subtasks = []
    for index, agent_type in enumerate(order, 1):
        deps = [f"subtask-{order.index(d) + 1}" for d in NEEDS.get(agent_type, []) if d in order[: index - 1]]
        name = next(t.name for t in known if t.type == agent_type) if agent_type in types else agent_type
        subtasks.append(
            {
                "id": f"subtask-{index}",
                "description": f"{name}: the {agent_type} part of: {description[:160]}",
                "agent_type": agent_type,
                "depends_on": deps,
            }
        )
    return {
        "analysis": f"(simulated) Matched {', '.join(order)} by keywords in the task description.",
        "subtasks": subtasks,
    }


@dataclass
class Prompt:
    """A request's messages as the simulator reads them: framed (with the request's nonce) or not."""

    text: str
    """Every message, joined."""
    first_user: str
    nonce: str | None

    @classmethod
    def of(cls, messages: list[dict[str, Any]]) -> Prompt:
        user = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
        first = user[0] if user else ""
        # The rules open the first user message, so its first tag carries the request's nonce.
        return cls("\n".join(str(m.get("content") or "") for m in messages), first, prompting.nonce_of(first))

    def frames(self, kind: str) -> list[prompting.Frame]:
        return prompting.frames(self.text, self.nonce, kind) if self.nonce else []

    @property
    def skeleton(self) -> str:
        """What Aether wrote itself: the prompt without its framed texts."""
        return prompting.outside(self.text, self.nonce) if self.nonce else self.text

    @property
    def task(self) -> str:
        if self.nonce:
            found = prompting.frames(self.first_user, self.nonce, "task")
            return found[0].text if found else ""
        match = re.search(r"<task>\n(.*)\n</task>", self.first_user, re.DOTALL)
        return match.group(1) if match else self.first_user

    def subtask(self, subtask_id: str | None) -> str | None:
        """The description of the subtask a request is for (by its id), if the prompt has one."""
        if self.nonce:
            found = self.frames("subtask")
            mine = [f for f in found if f.attrs.get("id") == subtask_id] or found[:1]
            return mine[0].text if mine else None
        match = SUBTASK_LINE.search(self.text)
        return match.group(2) if match else None


def replan_reply(prompt: Prompt, failed: prompting.Frame) -> str:
    """A replacement sub-plan: the task's `SIM-REPLAN:` line, or one cleaned-up subtask."""
    scripted = REPLAN_LINE.search(prompt.task)
    if scripted:
        return scripted.group(1)
    failed_id = failed.attrs.get("id", "?")
    description = DIRECTIVE.sub("", failed.text).strip() or "the failed part"
    return json.dumps({
        "analysis": f"(simulated) replacing {failed_id}",
        "subtasks": [{
            "id": "fix",
            "description": f"Replacement for {failed_id}: {description}",
            "agent_type": failed.attrs.get("agent_type", "fullstack"),
            "depends_on": [],
        }],
    })


def plan_reply(messages: list[dict[str, Any]], opts: dict[str, str], repairing: bool) -> str:
    prompt = Prompt.of(messages)
    task = prompt.task
    scripted = PLAN_LINE.search(task)
    if opts.get("malformed") and (not repairing or opts["malformed"] == "always"):
        return '{"analysis": "simulated malformed plan", "subtasks": [ {"id": "subtask-1", '
    failed = prompting.frames(prompt.first_user, prompt.nonce, "failed-subtask") if prompt.nonce else []
    if failed:  # a replan: the prompt names the subtask to replace
        return replan_reply(prompt, failed[0])
    if scripted:
        return scripted.group(1)
    system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
    types = TYPE_LINE.findall(system) or [t.type for t in BUILTIN_TEMPLATES]
    return json.dumps(simulated_plan(task, types))


def expert_reply(messages: list[dict[str, Any]], agent_type: str | None, subtask_id: str | None, opts: dict[str, str]) -> str:
    prompt = Prompt.of(messages)
    description = prompt.subtask(subtask_id) or "the subtask"
    deps = DEP_RESULT.findall(prompt.skeleton)
    agent_type = agent_type or "fullstack"
    lang, path, body = FILE_FOR.get(agent_type, ("text", f"notes/{agent_type}.md", "simulated notes\n"))
    path = opts.get("path", path)
    files = int(opts.get("files", "1"))
    body = f"{COMMENT.get(lang, '#')} written by {subtask_id or 'a subtask'}\n{body}"
    if "file_bytes" in opts:
        want = int(opts["file_bytes"])
        line = f"{COMMENT.get(lang, '#')} padding to {want} bytes\n"
        body += line * max(0, (want - len(body)) // len(line))
    lines = [
        SIMULATED_NOTICE,
        "",
        f"## {agent_type}: {subtask_id or 'subtask'}",
        "",
        f"Simulated work on: {description}",
        "",
        "Context received from: " + (", ".join(f"{d} ({t})" for d, t in deps) if deps else "no dependencies"),
    ]
    for n in range(files):
        file_path = path if n == 0 else re.sub(r"(\.[^./]+)?$", lambda m, n=n: f"_{n}{m.group(0)}", path, count=1)
        lines += ["", f"```{lang} path={file_path}", body.rstrip("\n"), "```"]
    if opts.get("hostile"):
        for hostile_lang, hostile_path in HOSTILE_BLOCKS:
            lines += ["", f'```{hostile_lang} path="{hostile_path}"', "owned", "```"]
        lines += ["", "```python path=cut_off.py", "def half_written("]
    return "\n".join(lines)


def synthesis_reply(messages: list[dict[str, Any]]) -> str:
    skeleton = Prompt.of(messages).skeleton
    parts = DEP_RESULT.findall(skeleton)
    missing = MISSING_LINE.findall(skeleton)
    lines = [
        SIMULATED_NOTICE.replace("Simulated result", "Simulated synthesis"),
        "",
        "## Integrated result (simulated)",
        "",
        "Parts integrated: " + (", ".join(f"{s} ({t})" for s, t in parts) or "none"),
    ]
    if missing:
        lines += ["", "Missing parts: " + ", ".join(f"{s} ({t})" for s, t in missing)]
    for path, between in CONFLICT_LINE.findall(skeleton):
        lines += ["", f"Resolved the conflict on {path} between {between}:", "", f"```text path={path}",
                  f"simulated resolution of {path}, merging {between}", "```"]
    lines += ["", "## How to run (simulated)", "", "Nothing to run: this is a simulated result."]
    return "\n".join(lines)


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.state = SimState(config or SimConfig())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/")
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            await self.chat(scope, receive, send)
        elif method == "GET" and path in ("/v1/models", "/models"):
            await _json(send, 200, {"object": "list", "data": [{"id": "aether-simulator", "object": "model", "owned_by": "aether"}]})
        elif method == "GET" and path == "/_sim/requests":
            await self.recorded(scope, send)
        elif method == "GET" and path == "/_sim/stats":
            st = self.state
            await _json(send, 200, {"requests": dict(st.counters), "in_flight": st.in_flight, "max_in_flight": st.max_in_flight})
        elif method == "POST" and path == "/_sim/outage":
            query = parse_qs(scope.get("query_string", b"").decode())
            seconds = float(query.get("seconds", ["60"])[0])
            self.state.down_until = time.monotonic() + seconds
            await _json(send, 200, {"down_for_s": seconds})
        elif method == "POST" and path == "/_sim/reset":
            self.state.requests.clear()
            self.state.counters.clear()
            self.state.seen.clear()
            self.state.max_in_flight = 0
            await _json(send, 200, {"reset": True})
        elif method == "GET" and path in ("", "/health"):
            await _json(send, 200, {"status": "ok", "simulator": True})
        else:
            await _json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})

    async def recorded(self, scope, send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        task_id = query.get("task_id", [None])[0]
        role = query.get("role", [None])[0]
        items = [
            r.__dict__
            for r in self.state.requests
            if (task_id is None or r.task_id == task_id) and (role is None or r.role == role)
        ]
        await _json(send, 200, {"requests": items})

    async def chat(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
            messages = request["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            await _json(send, 400, {"error": {"message": f"invalid request: {exc}", "type": "invalid_request_error"}})
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        json_mode = (request.get("response_format") or {}).get("type") in ("json_object", "json_schema")
        role = headers.get("x-aether-role") or ("planner" if json_mode else "expert")
        task_id = headers.get("x-aether-task-id")
        subtask_id = headers.get("x-aether-subtask-id")
        agent_type = headers.get("x-aether-agent-type")
        model = request.get("model") or "aether-simulator"
        stream = bool(request.get("stream"))
        read = Prompt.of(messages)
        prompt = read.text
        # Directives come from the task's own text (not the scripted plan inside it), and for an
        # expert also from its subtask's description, never from quoted dependency results.
        task_text = REPLAN_LINE.sub("", PLAN_LINE.sub("", read.task))
        opts = directives(task_text, role)
        if role == "expert":
            opts.update(directives(read.subtask(subtask_id) or "", role))

        st = self.state
        key = (role, task_id, subtask_id)
        st.counters[role] += 1
        seen = st.seen[key]
        st.seen[key] += 1
        status = 200
        if "fail" in opts and (("times" not in opts) or seen < int(opts["times"])):
            status = int(opts["fail"])
        if time.monotonic() < st.down_until:
            status = 503
        record = Recorded(time.time(), role, task_id, subtask_id, agent_type, model, headers, messages, status, json_mode, stream)
        st.requests.append(record)
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            delay = _latency_s(st, opts)
            if delay and await _client_left(receive, delay):
                # The caller gave up (a cancelled task aborts its LLM calls): record it as nginx
                # does, 499, so tests can see the abort.
                record.status = 499
                return
            if status != 200:
                extra = [(b"retry-after", b"0")] if status == 429 else []
                await _json(send, status, {"error": {"message": f"simulated HTTP {status}", "type": "simulated_error"}}, extra)
                return
            if role == "planner":
                repairing = any(m.get("role") == "assistant" for m in messages)
                text = plan_reply(messages, opts, repairing)
            elif role == "synthesizer":
                text = synthesis_reply(messages)
            else:
                text = expert_reply(messages, agent_type, subtask_id, opts)
            if opts.get("empty") and role == "expert":
                text = ""
            usage = {
                "prompt_tokens": estimate_tokens(prompt),
                "completion_tokens": estimate_tokens(text) if text else 0,
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            if stream:
                await self._stream(send, model, text, usage, request)
            else:
                await _json(send, 200, _completion(model, text, usage))
        finally:
            st.in_flight -= 1

    async def _stream(self, send, model: str, text: str, usage: dict, request: dict) -> None:
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        })
        ident = f"chatcmpl-sim-{uuid.uuid4().hex[:12]}"
        created = int(time.time())

        def chunk(delta: dict, finish: str | None = None, with_usage: dict | None = None) -> bytes:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [] if with_usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                payload["usage"] = with_usage
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        pieces = [text[i : i + 64] for i in range(0, len(text), 64)] or [""]
        await send({"type": "http.response.body", "body": chunk({"role": "assistant", "content": ""}), "more_body": True})
        for piece in pieces:
            await send({"type": "http.response.body", "body": chunk({"content": piece}), "more_body": True})
        await send({"type": "http.response.body", "body": chunk({}, "stop"), "more_body": True})
        if (request.get("stream_options") or {}).get("include_usage"):
            await send({"type": "http.response.body", "body": chunk({}, with_usage=usage), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


async def _client_left(receive, delay: float) -> bool:
    """Sleep `delay`, unless the client disconnects first (then True)."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait_for(asyncio.shield(watcher), delay)
    except TimeoutError:
        return False
    finally:
        watcher.cancel()
    return True


def _completion(model: str, text: str, usage: dict) -> dict:
    return {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "aether-simulator",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": usage,
    }


async def _json(send, status: int, payload: Any, extra_headers: list | None = None) -> None:
    body = json.dumps(payload, default=str).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra_headers or [])],
    })
    await send({"type": "http.response.body", "body": body})
