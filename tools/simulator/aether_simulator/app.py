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
  file an expert writes), `file_bytes=<n>` (each file padded to about n bytes), `form=<form>`
  (how the reply names its files: `path` by default, or as models write them without being told:
  `info` ```` ```python app/main.py ````, `comment` a first line `# app/main.py`, `heading` a
  line `**app/main.py**` before the block), `hostile=1` (the reply adds files with hostile paths
  and an unterminated block, for the parser), `long=<n>` (an expert's reply at least n tokens
  long), `shape=1` (a plan request without a forced schema gets valid JSON that is no plan, as a
  small model answers JSON mode; `always`: the repair too), `newlines=1` (the plan's strings hold
  raw newlines and tabs), `ask=<n>` (an expert with tools asks the person n questions with
  `ask_user`, after writing its first files, and writes each answer into its work; `ask=busy`:
  one reply with a write, two questions and a listing, then an answer naming what it was told).

It behaves as real servers do where Aether must cope with them: `max_tokens` cuts a reply
(`finish_reason: length`); `--structured` makes it refuse `json_schema` (400) or every
`response_format`, or (`llama`) answer `json_schema` with a 500 and take a schema beside JSON
mode, as llama-cpp-python's server does; `--max-concurrency 1` generates one request at a time and queues the rest (a
local llama.cpp); `--tokens-per-s` paces generation; a streamed reply stops when the client closes
the stream (recorded as 499), an unstreamed one is generated to its end for nobody. `/_sim/stats`
counts the prompt tokens processed and every completion token generated.

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
import contextlib
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
from aether_core.llm import CONTINUE_PROMPT
from aether_core.templates import BUILTIN_TEMPLATES, keyword_plan

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
    structured: str = "schema"
    """What `response_format` this server takes, as real ones differ: `schema` (json_schema and
    json_object), `llama` (json_schema is a 500; a schema beside json_object binds the reply, as in
    llama-cpp-python), `json` (json_object only: json_schema is a 400), `text` (neither)."""
    max_concurrency: int = 0
    """Requests generated at once (0: any); the others wait in the server's queue, as a local
    llama.cpp serves one request at a time."""
    tokens_per_s: float = 0.0
    """Generation speed after the latency (0: the whole reply at once)."""
    tools: bool = True
    """Whether it takes `tools` (False: a 400, as servers without function calling answer)."""


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
    body: dict[str, Any] = field(default_factory=dict)
    """The request's other parameters (response_format, max_tokens, tools, …)."""


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
    generating: int = 0
    max_generating: int = 0
    """Requests being generated at once (the queue of `max_concurrency` excluded)."""
    prompt_tokens: int = 0
    tokens_generated: int = 0
    """Every completion token generated, for a client that left too (what the server spent)."""
    gate: asyncio.Semaphore | None = None
    down_until: float = 0.0
    """While `time.monotonic()` is below this, every completion is a 503 (an outage)."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.requests = deque(maxlen=self.config.record_limit)
        if self.config.max_concurrency > 0:
            self.gate = asyncio.Semaphore(self.config.max_concurrency)


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
    plan = keyword_plan(description, known)
    plan["analysis"] = f"(simulated) {plan['analysis']}"
    for subtask in plan["subtasks"]:
        subtask["verify"] = ["python3 -m pytest -q"]  # every simulated expert writes a test
    return plan


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


def plan_reply(messages: list[dict[str, Any]], opts: dict[str, str], repairing: bool, *, schema: bool = False) -> str:
    """The plan; `schema`: the request forced the plan's JSON Schema, as a server with structured
    output does, so a `shape` directive (a weak model's JSON that is no plan) does not apply."""
    prompt = Prompt.of(messages)
    task = prompt.task
    scripted = PLAN_LINE.search(task)
    if opts.get("malformed") and (not repairing or opts["malformed"] == "always"):
        return '{"analysis": "simulated malformed plan", "subtasks": [ {"id": "subtask-1", '
    if opts.get("shape") and not schema and (not repairing or opts["shape"] == "always"):
        # What a small model answers in JSON mode: valid JSON, not a plan.
        return json.dumps({"task": task[:80], "steps": ["understand the task", "write the code"], "done": False})
    if opts.get("newlines"):
        # Structured output can still hold raw control characters inside strings.
        plan = json.loads(scripted.group(1)) if scripted else simulated_plan(task, [t.type for t in BUILTIN_TEMPLATES])
        plan["analysis"] = "(simulated) a plan\nwith raw newlines\tinside its strings"
        return json.dumps(plan).replace("\\n", "\n").replace("\\t", "\t")
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
        file_path = path if n == 0 else re.sub(r"(\.[^./]+)?$", rf"_{n}\g<0>", path, count=1)
        lines += ["", *_named_block(opts.get("form", "path"), lang, file_path, body.rstrip("\n"))]
    if opts.get("hostile"):
        for hostile_lang, hostile_path in HOSTILE_BLOCKS:
            lines += ["", f'```{hostile_lang} path="{hostile_path}"', "owned", "```"]
        lines += ["", "```python path=cut_off.py", "def half_written("]
    if "long" in opts:  # at least this many tokens of prose, for the length limit
        lines += ["", "Notes: " + "the simulated expert keeps explaining. " * (int(opts["long"]) * 4 // 40 + 1)]
    return "\n".join(lines)


CHECK_LINE = re.compile(r"^- `(.+)`$", re.MULTILINE)
ASK_USER = "ask_user"
ALONE_LINE = 'assert len(glob.glob("tests/test_*.py")) == 1  # simulated: passes alone only'


@dataclass
class ToolCallReply:
    """A reply that calls tools instead of answering (finish reason `tool_calls`)."""

    calls: list[dict[str, Any]]
    text: str = ""


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:16]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def acting_reply(messages: list[dict[str, Any]], agent_type: str | None, subtask_id: str | None, opts: dict[str, str]) -> str | ToolCallReply:
    """A believable tool run, decided from the conversation so far: write the code and its test
    (with a bug), run the checks, see them fail, fix the bug, run them again, see them pass, then
    answer. `tools=broken` calls tools wrongly; `tools=loop` never stops; `cmd64=<base64>` runs
    that command once and answers with its output (for the sandbox tests)."""
    import base64

    name = re.sub(r"[^a-z0-9]+", "_", (subtask_id or "part").lower()).strip("_") or "part"
    module, test = f"sim_{name}.py", f"tests/test_sim_{name}.py"
    prompt = Prompt.of(messages)
    checks = CHECK_LINE.findall(prompt.skeleton) or ["python3 -m pytest -q"]
    tool_results = [m for m in messages if m.get("role") == "tool"]
    calls = [c for m in messages if m.get("role") == "assistant" for c in m.get("tool_calls") or []]
    # A question to a person is no step of the work: the run goes on as if it had not been asked.
    calls_made = [c["function"]["name"] for c in calls if c["function"]["name"] != ASK_USER]
    asked = [c["id"] for c in calls if c["function"]["name"] == ASK_USER]
    answers = {m.get("tool_call_id"): m.get("content") or "" for m in tool_results if m.get("tool_call_id") in asked}
    last = (tool_results[-1].get("content") or "") if tool_results else ""
    fixing = messages[-1].get("role") == "user" and "checks" in (messages[-1].get("content") or "") and len(messages) > 2
    mode = opts.get("tools", "run")
    if mode == "broken_forever":
        return ToolCallReply([_call("no_such_tool", n=len(calls_made))])
    if (mode in ("lazy", "stubborn") and not fixing) or mode == "stubborn":
        # Writes its work and answers without running anything: Aether's checks find the bug
        # (`lazy` then fixes it when told; `stubborn` never does).
        if not calls_made:
            return ToolCallReply([
                _call("write_file", path=module, content="def total(values):\n    return sum(values) - 1  # a simulated bug\n"),
                _call("write_file", path=test, content=f"from sim_{name} import total\n\n\ndef test_total():\n    assert total([1, 2, 3]) == 6\n"),
            ])
        return f"{SIMULATED_NOTICE}\n\nSimulated work on {subtask_id}: done (nothing was run)."
    if mode == "broken":
        if len(calls_made) == 0:
            return ToolCallReply([_call("delete_everything", path="/")])
        if len(calls_made) == 1:
            bad = _call("write_file", path="x.py")
            bad["function"]["arguments"] = '{"path": "x.py", "content": '  # not JSON
            return ToolCallReply([bad])
        if len(calls_made) == 2:
            return ToolCallReply([_call("write_file", path="../../escape.txt", content="owned")])
        if len(calls_made) == 3:
            return ToolCallReply([_call("read_file")])  # a required argument missing
        return ToolCallReply([_call("write_file", path="notes.md", content="recovered after four tool errors\n")]) if len(calls_made) == 4 else (
            SIMULATED_NOTICE + "\n\nSimulated recovery: every wrong call was answered with an error.")
    if mode == "loop":
        return ToolCallReply([_call("list_files", path=".")])
    if "cmd64" in opts:
        if not tool_results:
            return ToolCallReply([_call("run_command", command=base64.b64decode(opts["cmd64"]).decode(), timeout_s=float(opts.get("timeout", "30")))])
        return f"{SIMULATED_NOTICE}\n\nSimulated command run. Its result:\n\n{last}"
    lang, path, body = FILE_FOR.get(agent_type or "fullstack", ("text", f"notes/{agent_type}.md", "simulated notes\n"))
    own = prompt.subtask(subtask_id) or ""
    broken = re.search(r"FAILED (tests/test_sim_\w+\.py)", own) if "assembled repository" in own else None
    if broken:
        # A fix-up: the test that passed alone and fails beside the others loses its assumption.
        if not calls_made:
            return ToolCallReply([_call("edit_file", path=broken.group(1), old=ALONE_LINE, new="assert True  # simulated fix-up")])
        if calls_made[-1] == "edit_file":
            return ToolCallReply([_call("run_command", command=checks[0])])
        return f"{SIMULATED_NOTICE}\n\nSimulated fix-up: {broken.group(1)} no longer assumes it is alone."
    if opts.get("ask") == "busy":
        # Its question amid other calls of one reply, and a second question (one at a time).
        if not asked:
            return ToolCallReply([
                _call("write_file", path=f"notes/{name}.md", content="written before the question\n"),
                _call(ASK_USER, question=_question(subtask_id, 1)),
                _call(ASK_USER, question=_question(subtask_id, 2)),
                _call("list_files", path="."),
            ])
        return f"{SIMULATED_NOTICE}\n\nSimulated: asked and was told: {_answer_text(prompt, answers.get(asked[0], ''))}."
    wanted = int(opts["ask"]) if opts.get("ask", "").isdigit() else 0
    if calls_made and len(asked) < wanted and calls_made[-1] == "write_file" and (not asked or asked[-1] in answers):
        # After its first files (which must survive the wait), it asks; after each answer it
        # writes the answer down, so the answer shows in its work.
        if not asked or calls[-1]["function"]["name"] != ASK_USER:
            return ToolCallReply([_call(ASK_USER, question=_question(subtask_id, len(asked) + 1))])
    if asked and calls and calls[-1]["function"]["name"] == ASK_USER:
        answer = _answer_text(prompt, answers.get(asked[-1], ""))
        return ToolCallReply([_call("write_file", path=f"answers/{name}_{len(asked)}.md",
                                    content=f"Q: {_question(subtask_id, len(asked))}\nA: {answer}\n")])
    if not calls_made:
        buggy = f"# written by {subtask_id} (simulated)\n\n\ndef total(values):\n    return sum(values) - 1  # a simulated bug\n"
        tested = (f"from sim_{name} import total\n\n\ndef test_total():\n    assert total([1, 2, 3]) == 6\n")
        if opts.get("alone"):  # passes in its own worktree only: the repository's checks catch it
            tested = f"import glob\n\n{tested}\n\ndef test_alone():\n    {ALONE_LINE}\n"
        return ToolCallReply([
            _call("list_files", path="."),
            _call("write_file", path=path, content=f"{COMMENT.get(lang, '#')} written by {subtask_id}\n{body}"),
            _call("write_file", path=module, content=buggy),
            _call("write_file", path=test, content=tested),
        ])
    if calls_made[-1] in ("write_file", "edit_file") or fixing:
        if fixing and "edit_file" not in calls_made[-3:]:
            return ToolCallReply([_call("edit_file", path=module, old="sum(values) - 1  # a simulated bug", new="sum(values)")])
        return ToolCallReply([_call("run_command", command=checks[0])])
    if calls_made[-1] == "run_command":
        if not last.startswith("exit code 0"):
            if "edit_file" not in calls_made:
                return ToolCallReply([_call("read_file", path=module)])
            return f"{SIMULATED_NOTICE}\n\nSimulated work on {subtask_id}: the checks still fail."
        told = "".join(f" Asked a person and was told: {_answer_text(prompt, answers.get(a, ''))}." for a in asked)
        return (f"{SIMULATED_NOTICE}\n\n## {agent_type}: {subtask_id}\n\nSimulated tool run: wrote {path}, {module} and "
                f"{test}; the first run of `{checks[0]}` failed, the bug is fixed, and it passes now.{told}")
    if calls_made[-1] == "read_file":
        return ToolCallReply([_call("edit_file", path=module, old="sum(values) - 1  # a simulated bug", new="sum(values)")])
    return ToolCallReply([_call("run_command", command=checks[0])])


def _question(subtask_id: str | None, number: int) -> str:
    return f"Question {number} from {subtask_id or 'a subtask'}: which database should it use, PostgreSQL or SQLite?"


def _answer_text(prompt: Prompt, content: str) -> str:
    """The person's answer as the expert read it (framed as data), on one line."""
    framed = prompting.frames(content, prompt.nonce, "answer") if prompt.nonce else []
    return " ".join((framed[0].text if framed else content).split())


def _named_block(form: str, lang: str, path: str, body: str) -> list[str]:
    if form == "info":
        return [f"```{lang} {path}", body, "```"]
    if form == "comment":
        return [f"```{lang}", f"{COMMENT.get(lang, '#')} {path}", body, "```"]
    if form == "heading":
        return [f"**{path}**", "", f"```{lang}", body, "```"]
    return [f"```{lang} path={path}", body, "```"]


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
            await _json(send, 200, {
                "requests": dict(st.counters), "in_flight": st.in_flight, "max_in_flight": st.max_in_flight,
                "max_generating": st.max_generating, "prompt_tokens": st.prompt_tokens, "tokens_generated": st.tokens_generated,
            })
        elif method == "POST" and path == "/_sim/outage":
            query = parse_qs(scope.get("query_string", b"").decode())
            seconds = float(query.get("seconds", ["60"])[0])
            self.state.down_until = time.monotonic() + seconds
            await _json(send, 200, {"down_for_s": seconds})
        elif method == "POST" and path == "/_sim/reset":
            self.state.requests.clear()
            self.state.counters.clear()
            self.state.seen.clear()
            self.state.max_in_flight = self.state.max_generating = 0
            self.state.prompt_tokens = self.state.tokens_generated = 0
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
        refused = self._refused_format(request)
        record = Recorded(time.time(), role, task_id, subtask_id, agent_type, model, headers, messages,
                          status, json_mode, stream,
                          {k: v for k, v in request.items() if k != "messages"})
        st.requests.append(record)
        if refused:
            record.status = refused[0]
            await _json(send, refused[0], {"error": {"message": refused[1], "type": "invalid_request_error", "param": "response_format"}})
            return
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        try:
            async with st.gate or contextlib.nullcontext():
                await self._generate(receive, send, request, record, opts, read, role, status, stream, seen)
        finally:
            st.in_flight -= 1

    def _refused_format(self, request: dict) -> tuple[int, str] | None:
        if request.get("tools") and not self.state.config.tools:
            return 400, "tools are not supported by this server"
        kind = (request.get("response_format") or {}).get("type")
        structured = self.state.config.structured
        if kind == "json_schema" and structured == "llama":
            # llama-cpp-python's server: a validation error answered as a 500.
            return 500, "1 validation error: ('body', 'response_format', 'type') Input should be 'text' or 'json_object'"
        if kind == "json_schema" and structured in ("json", "text"):
            return 400, "response_format type 'json_schema' is not supported by this server"
        if kind == "json_object" and structured == "text":
            return 400, "response_format type 'json_object' is not supported by this server"
        return None

    def _forces_schema(self, request: dict) -> bool:
        """Whether this request's schema binds the reply (as a grammar would)."""
        response_format = request.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            return True
        return response_format.get("type") == "json_object" and "schema" in response_format and self.state.config.structured == "llama"

    async def _generate(self, receive, send, request: dict, record: Recorded, opts: dict[str, str], read, role: str,
                        status: int, stream: bool, seen: int) -> None:
        st = self.state
        st.generating += 1
        st.max_generating = max(st.max_generating, st.generating)
        try:
            messages = request["messages"]
            delay = _latency_s(st, opts)
            # A server notices a client that left only when it writes to it: a streamed reply
            # stops then; an unstreamed one is generated to its end for nobody.
            if delay and (await _client_left(receive, delay) if stream else await _slept(delay)):
                # The caller gave up (a cancelled task aborts its LLM calls): record it as nginx
                # does, 499, so tests can see the abort.
                record.status = 499
                return
            if status != 200:
                extra = [(b"retry-after", b"0")] if status == 429 else []
                await _json(send, status, {"error": {"message": f"simulated HTTP {status}", "type": "simulated_error"}}, extra)
                return
            continued = ""
            if len(messages) >= 2 and messages[-1].get("content") == CONTINUE_PROMPT and messages[-2].get("role") == "assistant":
                # Asked to go on after a cut-off reply: the same reply, from where it stopped.
                continued = messages[-2].get("content") or ""
                messages = messages[:-2]
            if role == "planner":
                repairing = any(m.get("role") == "assistant" for m in messages)
                text = plan_reply(messages, opts, repairing, schema=self._forces_schema(request))
            elif role == "synthesizer":
                text = synthesis_reply(messages)
            elif request.get("tools") and opts.get("tools") != "off" and (
                CHECK_LINE.search(read.skeleton) or "tools" in opts or "cmd64" in opts or "ask" in opts
            ):
                acted = acting_reply(messages, record.agent_type, record.subtask_id, opts)
                if isinstance(acted, ToolCallReply):
                    await self._tool_calls(send, record, acted, estimate_tokens(read.text), request, stream)
                    return
                text = acted
            else:
                text = expert_reply(messages, record.agent_type, record.subtask_id, opts)
            if opts.get("empty") and role == "expert":
                text = ""
            if continued and text.startswith(continued):
                text = text[len(continued):]
            text, finish = _bounded(text, request.get("max_tokens") or request.get("max_completion_tokens"))
            prompt_tokens = estimate_tokens(read.text)
            st.prompt_tokens += prompt_tokens
            if stream:
                await self._stream(receive, send, record, text, finish, prompt_tokens, request)
            else:
                await self._paced(estimate_tokens(text))
                st.tokens_generated += estimate_tokens(text)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": estimate_tokens(text)}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                await _json(send, 200, _completion(record.model, text, usage, finish))
        finally:
            st.generating -= 1

    async def _tool_calls(self, send, record: Recorded, reply: ToolCallReply, prompt_tokens: int, request: dict, stream: bool) -> None:
        st = self.state
        tokens = estimate_tokens(json.dumps(reply.calls))
        st.prompt_tokens += prompt_tokens
        st.tokens_generated += tokens
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}
        ident = f"chatcmpl-sim-{uuid.uuid4().hex[:12]}"
        if not stream:
            message = {"role": "assistant", "content": reply.text or None, "tool_calls": reply.calls}
            await _json(send, 200, {
                "id": ident, "object": "chat.completion", "created": int(time.time()), "model": record.model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}],
                "usage": usage,
            })
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})

        def chunk(choices: list, with_usage: dict | None = None) -> bytes:
            payload: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
                                       "model": record.model, "choices": choices}
            if with_usage:
                payload["usage"] = with_usage
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        await send({"type": "http.response.body", "body": chunk([{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]), "more_body": True})
        for index, call in enumerate(reply.calls):
            arguments = call["function"]["arguments"]
            head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}
            await send({"type": "http.response.body", "body": chunk([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}]), "more_body": True})
            for i in range(0, len(arguments), 48):  # arguments arrive in pieces, as real servers send them
                piece = {"index": index, "function": {"arguments": arguments[i : i + 48]}}
                await send({"type": "http.response.body", "body": chunk([{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]), "more_body": True})
        await send({"type": "http.response.body", "body": chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]), "more_body": True})
        if (request.get("stream_options") or {}).get("include_usage"):
            await send({"type": "http.response.body", "body": chunk([], usage), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _paced(self, tokens: int) -> None:
        if self.state.config.tokens_per_s > 0 and tokens:
            await asyncio.sleep(tokens / self.state.config.tokens_per_s)

    async def _stream(self, receive, send, record: Recorded, text: str, finish: str, prompt_tokens: int, request: dict) -> None:
        st = self.state
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
                "model": record.model,
                "choices": [] if with_usage else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                payload["usage"] = with_usage
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        pieces = [text[i : i + 64] for i in range(0, len(text), 64)] or [""]
        await send({"type": "http.response.body", "body": chunk({"role": "assistant", "content": ""}), "more_body": True})
        generated = 0
        pace = self.state.config.tokens_per_s
        for piece in pieces:
            tokens = estimate_tokens(piece)
            if pace > 0 and await _client_left(receive, tokens / pace):
                record.status = 499  # the client closed the stream: generation stops here
                st.tokens_generated += generated
                return
            generated += tokens
            await send({"type": "http.response.body", "body": chunk({"content": piece}), "more_body": True})
        st.tokens_generated += generated
        await send({"type": "http.response.body", "body": chunk({}, finish), "more_body": True})
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated, "total_tokens": prompt_tokens + generated}
            await send({"type": "http.response.body", "body": chunk({}, with_usage=usage), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _bounded(text: str, max_tokens: Any) -> tuple[str, str]:
    """The reply as `max_tokens` leaves it, and its finish reason (`length` when cut)."""
    if isinstance(max_tokens, int) and max_tokens > 0 and estimate_tokens(text) > max_tokens:
        return text[: max_tokens * 4], "length"
    return text, "stop"


async def _slept(delay: float) -> bool:
    await asyncio.sleep(delay)
    return False


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


def _completion(model: str, text: str, usage: dict, finish: str = "stop") -> dict:
    return {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "aether-simulator",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
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
