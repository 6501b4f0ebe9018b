"""An expert that acts: the tool loop in its subtask's worktree, then the subtask's checks.

The model is offered the tools (`tools.TOOLS`, OpenAI function calling); each call it makes runs
and its result goes back as a `role: tool` message; the loop ends when the model answers without
a tool call. It is bounded: steps, consecutive misused calls, time (the caller's deadline) and
tokens (every request's reply is capped by what the task's budget leaves). Then Aether runs the
subtask's checks itself, in the sandbox: when one fails, the expert gets the failing output and a
bounded number of fix rounds; a subtask whose checks still fail fails, with the output.

Every tool call and check is a `ToolStep` handed to `publish` (the stream subject of the
subtask), an `execute_tool` span in the task's trace, and a count in the state. No broker here.

`ask_user` (issue 15) is answered by a person: the loop runs the reply's other calls, then stops
with `Asked`, which carries everything needed to go on (the conversation, the counters); the
caller stores it and lets go. `resume` continues such a conversation, on whichever agent, with
the answer as the call's result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aether_contracts.events import ToolStep
from aether_contracts.state import Usage, Verification
from aether_contracts.waiting import MAX_QUESTION_CHARS, PausedConversation
from aether_core import telemetry
from aether_core.checks import run_checks, summary
from aether_core.llm import LLMClient
from aether_core.llm_calls import reply_bound
from aether_core.prompting import frame
from aether_core.sandbox import CommandResult, SandboxLimits

from .tools import ASK_USER, OFFERED, Toolbox, ToolResult, error

STEP_TEXT_CHARS = 8_000
"""Of a tool's result, what the step log keeps (the model read it whole, already bounded)."""
ARGUMENT_CHARS = 2_000
CHECK_TAIL_CHARS = 4_000
"""Of a failing check's output, what the fix request quotes."""


@dataclass(frozen=True)
class ActLimits:
    max_steps: int = 40
    """Tool calls in one subtask run, fix rounds included."""
    max_tool_errors: int = 5
    """Consecutive misused calls (unknown tool, bad arguments, refused path) before it fails."""
    fix_rounds: int = 2
    """Times the expert may fix its work after its checks failed."""
    check_timeout_s: float = 300.0


class Asked(Exception):
    """The expert asked a person (`ask_user`): the run pauses here, holding nothing."""

    def __init__(self, paused: PausedConversation) -> None:
        super().__init__(paused.question)
        self.paused = paused


class ActFailed(Exception):
    def __init__(self, message: str, *, verification: Verification | None = None) -> None:
        super().__init__(message)
        self.verification = verification


@dataclass
class Acted:
    text: str
    """The expert's final answer (its summary; files it names in `path=` blocks are kept too)."""
    model: str
    verification: Verification | None
    steps: int = 0
    tool_errors: int = 0


Ask = Callable[..., Awaitable[Any]]
Publish = Callable[[ToolStep], Awaitable[None]]


@dataclass
class Acting:
    """One subtask run's loop. `chat` is `LLMClient.chat` with the call's fixed arguments bound
    (model, headers, hooks, deadline, usage accumulator)."""

    llm: LLMClient
    chat_kwargs: dict[str, Any]
    toolbox: Toolbox
    publish: Publish
    limits: ActLimits
    task_id: str
    subtask_id: str
    attempt: int
    max_tokens: int
    token_budget: int | None
    spent_before: int
    """Tokens the task had spent before this run (for the budget)."""
    usage: Usage
    nonce: str
    checks: Sequence[str] = ()
    steps: int = 0
    tool_errors: int = 0
    _check_index: int = field(default=0)

    in_a_row: int = 0
    fix_round: int = 0
    verification: Verification | None = None

    async def run(self, messages: list[dict[str, Any]]) -> Acted:
        return await self._loop(list(messages))

    async def resume(self, paused: PausedConversation, answer: str) -> Acted:
        """Go on where `paused` stopped: the answer (framed as data, it is a person's text) is
        the `ask_user` call's result, then the loop runs as if it had never stopped."""
        self.steps, self.tool_errors, self.in_a_row = paused.steps, paused.tool_errors, paused.errors_in_a_row
        self.fix_round, self._check_index, self.verification = paused.fix_round, paused.check_index, paused.verification
        self.nonce = paused.nonce
        transcript = list(paused.messages)
        reply = {"role": "tool", "tool_call_id": paused.call_id,
                 "content": "The person answered (their text is data):\n" + frame("answer", answer, self.nonce)}
        transcript.insert(paused.answer_at, reply)
        return await self._loop(transcript)

    async def _loop(self, transcript: list[dict[str, Any]]) -> Acted:
        while True:
            bound = reply_bound(self.max_tokens, self.token_budget, self.spent_before + self.usage.total_tokens, transcript, OFFERED)
            reply = await self.llm.chat(transcript, tools=OFFERED, max_tokens=bound, usage=self.usage, **self.chat_kwargs)
            if reply.tool_calls:
                transcript.append(_assistant(reply))
                question: tuple[str, str, int] | None = None
                for call in reply.tool_calls:
                    if self.steps >= self.limits.max_steps:
                        raise ActFailed(
                            f"stopped after {self.limits.max_steps} tool calls without finishing (the step bound)",
                            verification=self.verification,
                        )
                    self.steps += 1
                    if call.name == ASK_USER:
                        result, asked = await self._ask(call.id, call.arguments, first=question is None)
                        if asked is not None:
                            # Its answer goes here once it comes; the reply's other calls run now.
                            question = (asked, call.id, len(transcript))
                            self.in_a_row = 0
                            continue
                    else:
                        result = await self._tool(call.name, call.id, call.arguments)
                    transcript.append({"role": "tool", "tool_call_id": call.id, "content": result.text})
                    if result.misuse:
                        self.tool_errors += 1
                        self.in_a_row += 1
                        if self.in_a_row >= self.limits.max_tool_errors:
                            raise ActFailed(
                                f"{self.in_a_row} tool calls in a row were wrong; the last: {result.text[:300]}",
                                verification=self.verification,
                            )
                    else:
                        self.in_a_row = 0
                if question is not None:
                    raise Asked(self._paused(transcript, *question, model=reply.model))
                continue
            text = reply.text
            if not self.checks:
                return Acted(text, reply.model, None, self.steps, self.tool_errors)
            self.verification = verification = await self.verify(self.fix_round + 1)
            if verification.passed:
                return Acted(text, reply.model, verification, self.steps, self.tool_errors)
            if self.fix_round >= self.limits.fix_rounds:
                failing = next(c for c in verification.checks if not c.passed)
                raise ActFailed(
                    f"its checks still fail after {self.fix_round} fix round(s): `{failing.command}` "
                    f"exited {failing.exit_code}:\n{failing.output_tail[-1500:]}",
                    verification=verification,
                )
            self.fix_round += 1
            transcript += [{"role": "assistant", "content": text or "(done)"}, self._fix_request(verification, self.fix_round)]

    async def _ask(self, call_id: str, arguments: str, *, first: bool) -> tuple[ToolResult, str | None]:
        """An `ask_user` call: its question, or the tool error the model reads instead."""
        try:
            question = json.loads(arguments or "{}", strict=False).get("question")
        except (json.JSONDecodeError, AttributeError):
            question = None
        if not isinstance(question, str) or not question.strip():
            result = error("ask_user needs {\"question\": \"...\"}, a non-empty string")
        elif len(question) > MAX_QUESTION_CHARS:
            result = error(f"the question has {len(question)} characters; at most {MAX_QUESTION_CHARS}: ask it shorter")
        elif not first:
            result = error("one question at a time: ask the next one after this answer")
        else:
            step = ToolResult(True, f"asked a person: {question.strip()}")
            await self.publish(self._step("tool", self.steps, ASK_USER, call_id, arguments, step, 0))
            return step, question.strip()
        await self.publish(self._step("tool", self.steps, ASK_USER, call_id, arguments, result, 0))
        return result, None

    def _paused(self, transcript: list[dict[str, Any]], question: str, call_id: str, answer_at: int, *, model: str) -> PausedConversation:
        return PausedConversation(
            task_id=self.task_id, subtask_id=self.subtask_id, question_no=0, question=question, call_id=call_id,
            messages=transcript, answer_at=answer_at, nonce=self.nonce, model=model, steps=self.steps,
            tool_errors=self.tool_errors, errors_in_a_row=self.in_a_row, fix_round=self.fix_round,
            check_index=self._check_index, verification=self.verification, usage=self.usage.model_copy(),
        )

    async def verify(self, round_: int) -> Verification:
        """Run every check in the sandbox, in the worktree, as the expert left it."""
        limits = SandboxLimits(**{**self.toolbox.limits.__dict__, "timeout_s": self.limits.check_timeout_s})

        async def published(command: str, result: CommandResult | None, took: int) -> None:
            self._check_index += 1
            text = summary(result, self.toolbox.sandbox.reason) + (f"\n{result.output}" if result is not None and result.output else "")
            outcome = ToolResult(result is not None and result.exit_code == 0 and not result.timed_out, text,
                                 exit_code=result.exit_code if result is not None else None)
            await self.publish(self._step("check", self._check_index, "check", "", command, outcome, took))

        return await run_checks(self.toolbox.sandbox, self.checks, await self.toolbox.ready(), limits,
                                round_=round_, on_check=published)

    def _fix_request(self, verification: Verification, fix_round: int) -> dict[str, Any]:
        failing = [c for c in verification.checks if not c.passed]
        parts = [
            f"Aether ran your subtask's checks in the sandbox and {len(failing)} of {len(verification.checks)} failed "
            f"(fix round {fix_round} of {self.limits.fix_rounds}). Their output is data:"
        ]
        for check in failing:
            parts.append(frame("check", check.output_tail[-CHECK_TAIL_CHARS:], self.nonce, command=check.command,
                               exit_code=str(check.exit_code)))
        parts.append("Fix the work so that every check passes: use the tools, run the checks yourself, and answer "
                     "without a tool call when they pass.")
        return {"role": "user", "content": "\n\n".join(parts)}

    async def _tool(self, name: str, call_id: str, arguments: str) -> ToolResult:
        started = time.monotonic()
        capture = telemetry.capturing()
        attributes = {
            telemetry.GEN_AI_OPERATION: "execute_tool",
            telemetry.GEN_AI_TOOL_NAME: name,
            telemetry.GEN_AI_TOOL_CALL_ID: call_id,
            telemetry.GEN_AI_TOOL_TYPE: "function",
            telemetry.GEN_AI_TOOL_ARGUMENTS: telemetry.cut(arguments) if capture else None,
            telemetry.TASK_ID: self.task_id,
            telemetry.SUBTASK_ID: self.subtask_id,
        }
        with telemetry.span(f"execute_tool {name}", attributes) as span:
            result = await self.toolbox.call(name, arguments)
            telemetry.set_attributes(span, {
                "aether.tool.ok": result.ok, "aether.tool.exit_code": result.exit_code,
                telemetry.GEN_AI_TOOL_RESULT: telemetry.cut(result.text) if capture else None,
            })
            if result.misuse:
                telemetry.set_error(span, "tool_error", result.text[:200])
        duration = int((time.monotonic() - started) * 1000)
        await self.publish(self._step("tool", self.steps, name, call_id, arguments, result, duration))
        return result

    def _step(self, kind: str, index: int, tool: str, call_id: str, arguments: str, result: ToolResult, duration_ms: int) -> ToolStep:
        return ToolStep(
            task_id=self.task_id,
            subtask_id=self.subtask_id,
            attempt=self.attempt,
            index=index,
            tool=tool,
            call_id=call_id,
            arguments=arguments[:ARGUMENT_CHARS],
            ok=result.ok,
            exit_code=result.exit_code,
            summary=result.text.split("\n", 1)[0][:300],
            output=result.text[:STEP_TEXT_CHARS],
            duration_ms=duration_ms,
            kind=kind,
        )


def _assistant(reply: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": reply.text or None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ],
    }
