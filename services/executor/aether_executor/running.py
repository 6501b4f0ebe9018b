"""Running one subtask: claim it in the state, build the expert's prompt, call the LLM.

No broker in here: the handler turns the returned `SubtaskFinished` into an event.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aether_contracts.events import SubtaskFinished, SubtaskReady, ToolStep
from aether_contracts.state import (
    Subtask,
    SubtaskStatus,
    TaskState,
    TaskStatus,
    Usage,
    Verification,
    utcnow,
)
from aether_contracts.waiting import PausedConversation, conversation_object
from aether_core import telemetry
from aether_core.errors import HandBack
from aether_core.files import ExtractedFile, write_inside
from aether_core.inflight import Cancelled, InFlight
from aether_core.llm import LLMCallError, LLMClient, aether_headers
from aether_core.llm_calls import BudgetSpent, TaskNotes, record_spent, reply_bound
from aether_core.prompting import frame, new_nonce, rules
from aether_core.sandbox import Sandbox, SandboxLimits, Unavailable
from aether_core.store import TaskNotFound, TaskStore, Unchanged
from aether_core.templates import AgentTemplate, Registry

from .acting import ActFailed, Acting, ActLimits, Asked, Publish
from .presence import Presence
from .tools import SKIPPED_DIRS, Toolbox
from .workspace import Desk, Workspace, files_context

log = logging.getLogger("aether.agent")

HAND_BACK = "hand-back"
DEFAULT_QUESTION_TIMEOUT_S = 86400.0
"""For a task whose state names none (created before questions existed)."""
ArmQuestion = Callable[[TaskState, str, int, float, datetime], Awaitable[None]]
"""Arms a question's deadline (task state, subtask id, question number, timeout, asked at)."""
CONTEXT_RESULT_CHARS = 12_000
"""A dependency's result is cut to this many characters in a dependent's prompt (marked)."""


@dataclass
class Claim:
    state: TaskState
    subtask: Subtask


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n[… truncated by Aether: {len(text) - limit} more characters]"


def expert_messages(
    state: TaskState,
    subtask: Subtask,
    template: AgentTemplate,
    *,
    files: dict[str, bytes] | None = None,
    context_chars: int = CONTEXT_RESULT_CHARS,
) -> list[dict[str, str]]:
    """The expert's prompt: every text from the user, the plan or another expert (`files`: the
    ancestors' files, as `Desk.contents`) framed as data with one nonce (aether_core.prompting)."""
    return expert_prompt(state, subtask, template, files=files, context_chars=context_chars)[0]


def expert_prompt(
    state: TaskState,
    subtask: Subtask,
    template: AgentTemplate,
    *,
    files: dict[str, bytes] | None = None,
    context_chars: int = CONTEXT_RESULT_CHARS,
    tools: str | None = None,
) -> tuple[list[dict[str, str]], str]:
    """`expert_messages`, and the nonce its frames use; `tools`: how to work with the tools."""
    analysis = state.plan.analysis if state.plan else ""
    deps = [state.subtask(d) for d in subtask.depends_on]
    results = [truncate(dep.result or "", context_chars) for dep in deps]
    nonce = new_nonce(
        state.description, subtask.description, str(analysis),
        *(d.description for d in deps), *results, *(files or {}).values(),
    )
    parts = [
        rules(nonce),
        "",
        "The overall task (data from the user):",
        frame("task", state.description, nonce),
        "",
        f"Your subtask ({subtask.id}):",
        frame("subtask", subtask.description, nonce, id=subtask.id),
    ]
    if analysis:
        parts += ["", "Jason's analysis of the task:", frame("analysis", str(analysis), nonce)]
    if deps:
        parts += ["", "Results of the subtasks yours depends on:"]
        for dep, result in zip(deps, results, strict=True):
            parts += [
                "",
                f"### Result of {dep.id} ({dep.agent_type})",
                frame("subtask", dep.description, nonce, id=dep.id),
                frame("result", result, nonce, id=dep.id, agent_type=dep.agent_type),
            ]
    context = files_context(state, subtask, files or {}, nonce=nonce)
    if context:
        parts += ["", context]
    if tools:
        parts += ["", tools]
    return [
        {"role": "system", "content": template.system_prompt},
        {"role": "user", "content": "\n".join(parts)},
    ], nonce


def tools_brief(checks: list[str], sandbox_reason: str | None) -> str:
    """How an expert works with its tools, and the checks its work must pass."""
    lines = [
        "How you work: you are in a git worktree (the workspace) that already holds the files of the "
        "subtasks yours depends on. Use the tools: list_files and read_file to look, write_file and "
        "edit_file to write your files, run_command to run what you wrote (a sandbox without network). "
        "Files you write with the tools are your work; do not repeat them in your answer. When you are "
        "done, answer with a short summary of what you did and no tool call. When the task leaves open a "
        "decision only the person who gave it can make, ask them with ask_user (one short question) "
        "instead of guessing; your work waits for the answer.",
    ]
    if sandbox_reason:
        lines.append(f"run_command is not available on this agent ({sandbox_reason}).")
    if checks:
        lines.append(
            "When you are done, Aether runs these checks in the workspace, and your subtask is complete "
            "only when each exits with 0 (run them yourself first):"
        )
        lines += [f"- `{check}`" for check in checks]
    return "\n".join(lines)


def _claim(state: TaskState, event: SubtaskReady, agent_id: str, redelivered: bool) -> Claim:
    subtask = state.find_subtask(event.subtask_id)
    if subtask is None or state.status != TaskStatus.EXECUTING:
        raise Unchanged(None)
    if subtask.status.terminal or event.dispatch != subtask.dispatches:
        raise Unchanged(None)
    if subtask.status == SubtaskStatus.AWAITING_INPUT:
        raise Unchanged(None)  # its question is open: only an answer (a new dispatch) goes on
    rerun = subtask.status == SubtaskStatus.EXECUTING
    if rerun and not redelivered:
        # A duplicate event while another agent runs it; if that agent dies, its own message
        # comes back (redelivered) and the subtask is taken over then.
        raise Unchanged(None)
    resumed = subtask.resuming and not rerun
    if not resumed:
        # A resume goes on with the same run (its steps keep their numbers); a crash during it
        # makes a new run, which resumes from the question again.
        subtask.attempts += 1
    subtask.agent_id = agent_id
    subtask.started_at = subtask.started_at if resumed and subtask.started_at else utcnow()
    if resumed:
        message = f"Subtask {subtask.id} resumed on {agent_id} with the answer to question {subtask.questions}"
    else:
        message = f"Subtask {subtask.id} {'restarted' if rerun else 'started'} on {agent_id} ({subtask.agent_type})"
    state.set_subtask_status(
        subtask,
        SubtaskStatus.EXECUTING,
        message,
        level="warning" if rerun else "info",
        data={"agent_id": agent_id, "attempt": subtask.attempts, **({"resumed": True} if subtask.resuming else {})},
    )
    return Claim(state, subtask)


def _pause(state: TaskState, event: SubtaskReady, agent_id: str, attempt: int, paused: PausedConversation,
           name: str, asked_at: datetime) -> bool:
    """The expert asked: the subtask waits for a person, its conversation stored under `name`."""
    subtask = state.find_subtask(event.subtask_id)
    if (
        subtask is None
        or state.status != TaskStatus.EXECUTING
        or subtask.status != SubtaskStatus.EXECUTING
        or (subtask.dispatches, subtask.attempts, subtask.agent_id) != (event.dispatch, attempt, agent_id)
    ):
        raise Unchanged(False)  # cancelled, or taken over by another agent meanwhile: ours is stale
    subtask.questions = paused.question_no
    subtask.question, subtask.asked_at = paused.question, asked_at
    subtask.answer = subtask.answered_at = None
    subtask.conversation = name
    subtask.steps, subtask.tool_errors = paused.steps, paused.tool_errors
    subtask.usage.add(paused.usage)
    state.usage.add(paused.usage)
    shown = paused.question if len(paused.question) <= 300 else paused.question[:299] + "…"
    state.set_subtask_status(
        subtask, SubtaskStatus.AWAITING_INPUT, f"Subtask {subtask.id} asks a person (question {paused.question_no}): {shown}",
        data={"question_no": paused.question_no},
    )
    return True


class Worker:
    def __init__(
        self,
        store: TaskStore,
        llm: LLMClient,
        registry: Registry,
        *,
        agent_id: str,
        model: str,
        timeout_s: float,
        workspace: Workspace,
        presence: Presence | None = None,
        max_tokens: int = 4096,
        token_budget: int | None = None,
        sandbox: Sandbox | None = None,
        sandbox_limits: SandboxLimits = SandboxLimits(),
        act_limits: ActLimits = ActLimits(),
        tools: bool = True,
        publish_step: Publish | None = None,
        arm_question: ArmQuestion | None = None,
    ) -> None:
        self.store = store
        self.llm = llm
        self.registry = registry
        self.agent_id = agent_id
        self.model = model
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.token_budget = token_budget
        """The task's budget: every request's reply is capped by what it leaves."""
        self.sandbox = sandbox or Unavailable("no sandbox was set up for this agent")
        self.sandbox_limits = sandbox_limits
        self.act_limits = act_limits
        self.tools = tools
        """Experts act with tools in their worktree (an agent without one answers in one reply)."""
        self.publish_step = publish_step
        self.arm_question = arm_question
        """Arms the deadline of a question an expert asked (a NATS message schedule)."""
        self.presence = presence
        self.workspace = workspace
        self.inflight = InFlight()
        self.handing_back = False
        self._cleanups: set[asyncio.Task] = set()

    def _cleanup(self, work) -> None:
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def run_tracked(self, event: SubtaskReady, *, redelivered: bool = False) -> SubtaskFinished | None:
        """`run`, in a task of its own that a cancellation or a hand-back can take away."""
        if self.handing_back:
            raise HandBack()
        try:
            return await self.inflight.run(event.task_id, self.run(event, redelivered=redelivered))
        except Cancelled as cancelled:
            if cancelled.reason == HAND_BACK:
                raise HandBack() from None
            return None  # the task was cancelled: its state says so already, nothing to report

    async def hand_back(self) -> int:
        """Stop working: cancel every subtask in flight so its message is redelivered elsewhere."""
        self.handing_back = True
        running = self.inflight.cancel(None, HAND_BACK)
        if running:
            await asyncio.wait(running, timeout=10)
        return len(running)

    async def claim(self, event: SubtaskReady, redelivered: bool) -> Claim | None:
        try:
            mutation = await self.store.mutate(
                event.task_id, lambda s: _claim(s, event, self.agent_id, redelivered)
            )
        except TaskNotFound:
            return None
        return mutation.value if mutation.changed else None

    async def run(self, event: SubtaskReady, *, redelivered: bool = False) -> SubtaskFinished | None:
        """Run the subtask unless it is settled or running elsewhere; None: nothing to report (or
        its expert asked a person, and the subtask waits for the answer)."""
        claim = await self.claim(event, redelivered)
        if claim is None:
            return None
        if self.presence is not None:
            self.presence.busy(event.task_id, event.subtask_id)
        done = False
        try:
            finished = await self._execute(event, claim)
            done = finished is not None and finished.outcome == "completed"
            return finished
        finally:
            if self.presence is not None:
                self.presence.idle(event.task_id, event.subtask_id, done=done)

    async def _execute(self, event: SubtaskReady, claim: Claim) -> SubtaskFinished | None:
        subtask = claim.subtask
        started = subtask.started_at or utcnow()
        template = self.registry.template(subtask.agent_type)
        if template is None:
            return self._finished(event, started, error=f"no template for agent type '{subtask.agent_type}'")
        paused = None
        if subtask.resuming:
            try:
                paused = await self._paused(subtask)
            except Exception as exc:  # gone or unreadable: the subtask fails, with the reason
                return self._finished(event, started, error=f"its paused conversation cannot be resumed: {exc!r}")
        desk = await self.workspace.open(claim.state, subtask)
        spent = Usage()
        notes = TaskNotes(self.store, event.task_id, f"Subtask {event.subtask_id}:", event.subtask_id)
        if paused is not None and (not self.tools or not desk.can_check_out):
            self._cleanup(desk.close())
            return self._finished(event, started, error="its expert asked a question, and this agent cannot go on with "
                                  "tools in a worktree (AETHER_EXPERT_TOOLS=off or no writable workspace)")
        if self.tools and desk.can_check_out:
            try:
                return await self._act(event, claim, template, desk, spent, notes, started, paused)
            except BaseException:
                self._cleanup(record_spent(self.store, event.task_id, spent, event.subtask_id))
                raise
            finally:
                self._cleanup(desk.close())
        try:
            messages = expert_messages(claim.state, subtask, template, files=desk.contents)
            bound = reply_bound(self.max_tokens, self.token_budget, claim.state.usage.total_tokens, messages)
            reply = await self.llm.chat(
                messages,
                model=self.model,
                headers=aether_headers("expert", event.task_id, subtask.id, subtask.agent_type),
                max_tokens=bound,
                usage=spent,
                on_retry=notes.retry,
                on_note=notes.note,
                deadline=time.monotonic() + self.timeout_s,
                agent_name=template.name,
                agent_id=self.agent_id,
            )
            delivered = await desk.deliver(reply.text)
        except BudgetSpent as exc:
            # Not the expert's failure: the task stops politely (no replacement would fit either).
            finished = self._finished(event, started, error=str(exc), usage=spent)
            finished.budget_spent = True
            return finished
        except LLMCallError as exc:
            log.warning("task %s: subtask %s failed: %s", event.task_id, event.subtask_id, exc)
            return self._finished(event, started, error=str(exc), retryable=exc.retryable, usage=spent)
        except BaseException:
            # Cancelled or handed back: no result will carry these tokens, so they are counted now.
            self._cleanup(record_spent(self.store, event.task_id, spent, event.subtask_id))
            raise
        finally:
            # The worktree goes in the background: its removal is not on the way to the result.
            self._cleanup(desk.close())
        return SubtaskFinished(
            task_id=event.task_id,
            subtask_id=event.subtask_id,
            dispatch=event.dispatch,
            outcome="completed",
            result=delivered.text,
            files=delivered.files,
            refused_files=delivered.refused,
            agent_id=self.agent_id,
            model=reply.model,
            usage=reply.usage,
            started_at=started,
        )

    async def _act(self, event: SubtaskReady, claim: Claim, template: AgentTemplate, desk: Desk, spent: Usage,
                   notes: TaskNotes, started, paused: PausedConversation | None = None) -> SubtaskFinished | None:
        """The expert works with its tools in the worktree, then its checks run (`acting`); or,
        `paused`, goes on from where it asked a person, with their answer."""
        subtask = claim.subtask
        sandbox = self.sandbox
        if paused is None:
            brief = tools_brief(subtask.verify, None if sandbox.available else sandbox.reason)
            messages, nonce = expert_prompt(claim.state, subtask, template, files=desk.contents, tools=brief)
        else:
            messages, nonce = paused.messages, paused.nonce

        async def root() -> Path:
            worktree = await desk.worktree()
            assert worktree is not None
            if paused is not None and paused.worktree:
                # What the expert had written before it asked, on whichever agent that was.
                contents = await self.workspace.store.read_files(paused.worktree)
                for file in paused.worktree:
                    await asyncio.to_thread(write_inside, str(worktree.path), file.path, contents[file.object])
            return worktree.path

        acting = Acting(
            self.llm,
            {
                "model": self.model,
                "headers": aether_headers("expert", event.task_id, subtask.id, subtask.agent_type),
                "on_retry": notes.retry,
                "on_note": notes.note,
                "deadline": time.monotonic() + self.timeout_s,
                "agent_name": template.name,
                "agent_id": self.agent_id,
            },
            Toolbox(None, sandbox, self.sandbox_limits, self.workspace.limits.max_file_bytes, open_root=root),
            self._publish_step,
            self.act_limits,
            task_id=event.task_id,
            subtask_id=subtask.id,
            attempt=subtask.attempts,
            max_tokens=self.max_tokens,
            token_budget=self.token_budget,
            spent_before=claim.state.usage.total_tokens,
            usage=spent,
            nonce=nonce,
            checks=list(subtask.verify),
        )
        counts = {"steps": 0, "tool_errors": 0}
        try:
            if paused is None:
                acted = await acting.run(messages)
            else:
                await acting.toolbox.ready()  # the worktree as the expert left it, before anything else
                waited = (subtask.answered_at - subtask.asked_at).total_seconds() if subtask.answered_at and subtask.asked_at else None
                telemetry.annotate({"aether.resumed": True, "aether.question.number": subtask.questions, "aether.waited_s": waited})
                acted = await acting.resume(paused, subtask.answer or "")
            counts = {"steps": acting.steps, "tool_errors": acting.tool_errors}
            delivered = await desk.deliver(acted.text, worked_in=SKIPPED_DIRS)
        except Asked as asked:
            await self._ask(event, claim, desk, asked.paused)
            return None
        except ActFailed as exc:
            log.warning("task %s: subtask %s failed: %s", event.task_id, event.subtask_id, str(exc).split("\n", 1)[0])
            return self._finished(event, started, error=str(exc), usage=spent, verification=exc.verification,
                                  steps=acting.steps, tool_errors=acting.tool_errors)
        except BudgetSpent as exc:
            # Not the expert's failure: the task stops politely (no replacement would fit either).
            finished = self._finished(event, started, error=str(exc), usage=spent, steps=acting.steps)
            finished.budget_spent = True
            return finished
        except LLMCallError as exc:
            log.warning("task %s: subtask %s failed: %s", event.task_id, event.subtask_id, exc)
            return self._finished(event, started, error=str(exc), retryable=exc.retryable, usage=spent,
                                  steps=acting.steps, tool_errors=acting.tool_errors)
        return SubtaskFinished(
            task_id=event.task_id,
            subtask_id=event.subtask_id,
            dispatch=event.dispatch,
            outcome="completed",
            result=delivered.text,
            files=delivered.files,
            refused_files=delivered.refused,
            agent_id=self.agent_id,
            model=acted.model,
            usage=spent,
            started_at=started,
            verification=acted.verification,
            **counts,
        )

    async def _paused(self, subtask: Subtask) -> PausedConversation:
        assert subtask.conversation is not None
        return PausedConversation.model_validate_json(await self.workspace.store.read(subtask.conversation))

    async def _ask(self, event: SubtaskReady, claim: Claim, desk: Desk, paused: PausedConversation) -> None:
        """Store what the expert had done and said (the worktree's files, the conversation),
        arm the question's deadline, and let the subtask wait for a person: this agent and its
        message are free then, and any agent of the type goes on when the answer comes."""
        subtask = claim.subtask
        worktree = await desk.worktree()
        assert worktree is not None
        left, _ = await asyncio.to_thread(worktree.changes, self.workspace.limits, SKIPPED_DIRS)
        snapshot = await self.workspace.store.store_files(
            event.task_id, subtask.id, [ExtractedFile(path, content) for path, content in sorted(left.items())]
        )
        paused = paused.model_copy(update={"question_no": subtask.questions + 1, "worktree": snapshot})
        data = paused.to_bytes()
        name = conversation_object(event.task_id, subtask.id, hashlib.sha256(data).hexdigest())
        await self.workspace.store.put(name, data)  # named by its content: written once
        asked_at = utcnow()
        if self.arm_question is not None:
            # Before the state says it waits: a deadline of a question never recorded fires for nothing.
            timeout = claim.state.question_timeout_s or DEFAULT_QUESTION_TIMEOUT_S
            await self.arm_question(claim.state, subtask.id, paused.question_no, timeout, asked_at)
        mutation = await self.store.mutate(
            event.task_id, lambda s: _pause(s, event, self.agent_id, subtask.attempts, paused, name, asked_at)
        )
        if not mutation.changed:
            await record_spent(self.store, event.task_id, paused.usage, event.subtask_id)
        else:
            log.info("task %s: subtask %s asks a person (question %d)", event.task_id, subtask.id, paused.question_no)

    async def _publish_step(self, step: ToolStep) -> None:
        if self.publish_step is None:
            return
        try:
            await self.publish_step(step)
        except Exception as exc:  # the step log is for people: a lost step must not fail the work
            log.warning("task %s: step %d of %s not published: %r", step.task_id, step.index, step.subtask_id, exc)

    def _finished(
        self, event: SubtaskReady, started, *, error: str, retryable: bool = False, usage: Usage | None = None,
        verification: Verification | None = None, steps: int = 0, tool_errors: int = 0,
    ) -> SubtaskFinished:
        return SubtaskFinished(
            task_id=event.task_id,
            subtask_id=event.subtask_id,
            dispatch=event.dispatch,
            outcome="failed",
            error=error,
            retryable=retryable,
            usage=usage or Usage(),
            verification=verification,
            steps=steps,
            tool_errors=tool_errors,
            agent_id=self.agent_id,
            started_at=started,
        )

    def give_up(self, event: SubtaskReady, exc: BaseException) -> SubtaskFinished:
        return self._finished(event, None, error=f"gave up after repeated failures: {exc!r}")
