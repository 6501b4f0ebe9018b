"""Jason's synthesis: integrate the subtasks' results into one answer. No broker in here.

If the LLM cannot be reached the results are concatenated instead, and the task log says so.
Failed subtasks are named as missing; the synthesis never pretends they succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from aether_contracts.events import PlanReady, SynthesisRequested, TaskFinished
from aether_contracts.state import (
    EventKind,
    Subtask,
    SubtaskStatus,
    TaskState,
    TaskStatus,
    Usage,
    Verification,
)
from aether_core import telemetry
from aether_core.checks import run_checks
from aether_core.inflight import Cancelled, InFlight
from aether_core.llm import LLMCallError, LLMClient, aether_headers
from aether_core.llm_calls import BudgetSpent, TaskNotes, record_spent, reply_bound
from aether_core.prompting import frame, new_nonce, rules
from aether_core.sandbox import Sandbox, SandboxLimits
from aether_core.store import TaskNotFound, TaskStore, Unchanged
from aether_core.templates import JASON, MasterConfig, Registry

from .repository import README, Repository, workspace_brief

RESULT_CHARS = 24_000

log = logging.getLogger("aether.synthesizer")


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n[… truncated by Aether: {len(text) - limit} more characters]"


def missing_parts(state: TaskState) -> list[Subtask]:
    """What did not complete; a failed subtask replaced by a sub-plan is not missing."""
    return [s for s in state.subtasks if s.status != SubtaskStatus.COMPLETED and not s.replaced_by]


def synthesis_messages(
    state: TaskState,
    master: MasterConfig,
    *,
    files: dict[str, bytes] | None = None,
    result_chars: int = RESULT_CHARS,
) -> list[dict[str, str]]:
    """Jason's synthesis prompt, then the workspace brief (`files`: the conflicting versions,
    as `Repository.brief_files` reads them); every text from the user, the plan or an expert is
    framed as data with one nonce (aether_core.prompting)."""
    analysis = state.plan.analysis if state.plan else ""
    completed = [s for s in state.subtasks if s.status == SubtaskStatus.COMPLETED]
    results = {s.id: _cut(s.result or "", result_chars) for s in completed}
    missing = missing_parts(state)
    nonce = new_nonce(
        state.description, analysis, *results.values(), *(s.description for s in state.subtasks),
        *(s.error for s in missing), *(files or {}).values(),
    )
    parts = [
        rules(nonce),
        "",
        "The task (data from the user):",
        frame("task", state.description, nonce),
    ]
    if analysis:
        parts += ["", "Your analysis when planning:", frame("analysis", analysis, nonce)]
    parts += ["", "Results of the subtasks, in plan order:"]
    for subtask in completed:
        parts += [
            "",
            f"### Result of {subtask.id} ({subtask.agent_type})",
            frame("subtask", subtask.description, nonce, id=subtask.id),
            frame("result", results[subtask.id], nonce, id=subtask.id, agent_type=subtask.agent_type),
        ]
    if missing:
        parts += ["", "These subtasks FAILED; their parts are missing from the results:"]
        for s in missing:
            parts += [
                f"- {s.id} ({s.agent_type}):",
                frame("subtask", s.description, nonce, id=s.id),
                frame("error", s.error or "failed", nonce, id=s.id),
            ]
    parts += ["", workspace_brief(state, files or {}, nonce)]
    return [
        {"role": "system", "content": master.synthesis_prompt},
        {"role": "user", "content": "\n".join(parts)},
    ]


def concatenate(state: TaskState, reason: str) -> str:
    lines = [
        f"_Jason could not synthesize these results ({reason}); they are shown as the experts "
        "returned them._",
    ]
    for subtask in state.subtasks:
        if subtask.status == SubtaskStatus.COMPLETED:
            lines += ["", f"## {subtask.id} ({subtask.agent_type}): {subtask.description}", "", subtask.result or ""]
    missing = missing_parts(state)
    if missing:
        lines += ["", "## Missing parts", ""]
        lines += [f"- {s.id} ({s.agent_type}): {s.description} — {s.error or 'failed'}" for s in missing]
    return "\n".join(lines)


def _begin(state: TaskState, redelivered: bool) -> TaskState:
    if state.status != TaskStatus.SYNTHESIZING:
        raise Unchanged(None)
    if state.synthesis_attempts and not redelivered:
        raise Unchanged(None)  # a duplicate event while another instance synthesizes
    state.synthesis_attempts += 1
    again = " again (the previous attempt was interrupted)" if state.synthesis_attempts > 1 else ""
    state.record(EventKind.SYNTHESIS_STARTED, f"Jason started the synthesis{again}")
    return state


def _complete(state: TaskState, text: str, usage: Usage, note: str | None, verification: Verification | None = None) -> bool:
    if state.status != TaskStatus.SYNTHESIZING:
        raise Unchanged(False)  # cancelled meanwhile, or completed by a twin
    state.final_result = text
    state.usage.add(usage)
    if note:
        state.record(EventKind.SYNTHESIS_FALLBACK, note, level="warning")
    if verification is not None:
        state.verification = verification
        failing = [c.command for c in verification.checks if not c.passed]
        if verification.passed:
            state.record(EventKind.TASK_VERIFIED, f"The repository passes its {len(verification.checks)} check(s)")
        else:
            state.record(
                EventKind.TASK_UNVERIFIED,
                f"The repository fails {len(failing)} of its {len(verification.checks)} check(s): "
                + ", ".join(f"`{c}`" for c in failing) + (f" ({verification.note})" if verification.note else ""),
                level="warning",
            )
    missing = missing_parts(state)
    suffix = f"; {len(missing)} part(s) missing" if missing else ""
    if verification is not None:
        suffix += "; checks pass" if verification.passed else "; its checks do NOT pass"
    state.set_status(TaskStatus.COMPLETED, f"Task completed{suffix}")
    return True


def task_checks(state: TaskState) -> list[str]:
    """The checks of every completed subtask, each once, in commit order."""
    seen: list[str] = []
    for subtask in state.subtasks:
        if subtask.status == SubtaskStatus.COMPLETED:
            seen += [c for c in subtask.verify if c not in seen]
    return seen


FIXUP_OUTPUT_CHARS = 3_000


def _fix_up(state: TaskState, verification: Verification, max_fixups: int) -> int:
    """The repository fails its checks: an expert gets a fix-up subtask (after every completed
    one, with the failing checks as its own), and the task goes back to executing."""
    if state.status != TaskStatus.SYNTHESIZING:
        raise Unchanged(state.round)
    failing = [c for c in verification.checks if not c.passed]
    owners = [s for s in state.subtasks if s.status == SubtaskStatus.COMPLETED and set(s.verify) & {c.command for c in failing}]
    agent_type = owners[0].agent_type if owners else "fullstack"
    state.fixups += 1
    taken = {s.id for s in state.subtasks}
    fixup_id = next(f"fixup-{n}" for n in range(state.fixups, state.fixups + len(taken) + 2) if f"fixup-{n}" not in taken)
    details = "\n\n".join(f"`{c.command}` exited {c.exit_code}:\n{c.output_tail[-FIXUP_OUTPUT_CHARS:]}" for c in failing)
    state.subtasks.append(Subtask(
        id=fixup_id,
        description=(
            "The task's assembled repository (every subtask's files together) fails checks that passed "
            f"in the subtasks' own worktrees. Make them pass without breaking the others.\n\n{details}"
        ),
        agent_type=agent_type,
        depends_on=[s.id for s in state.subtasks if s.status == SubtaskStatus.COMPLETED],
        verify=[c.command for c in verification.checks],
    ))
    state.verification = verification
    state.round += 1
    state.synthesis_attempts = 0  # the next round's synthesis is a first attempt, not a duplicate
    state.record(
        EventKind.TASK_FIXUP,
        f"The repository fails {len(failing)} check(s): {', '.join(f'`{c.command}`' for c in failing)}; "
        f"{fixup_id} ({agent_type}) fixes it (fix-up {state.fixups} of at most {max_fixups})",
        level="warning",
        subtask_id=fixup_id,
    )
    state.set_status(TaskStatus.EXECUTING, f"Executing the fix-up {fixup_id}")
    return state.round


class Synthesizer:
    def __init__(
        self,
        store: TaskStore,
        llm: LLMClient,
        registry: Registry,
        *,
        model: str,
        timeout_s: float,
        repository: Repository,
        max_tokens: int = 4096,
        token_budget: int | None = None,
        sandbox: Sandbox | None = None,
        check_limits: SandboxLimits = SandboxLimits(timeout_s=300.0, cpu_s=300.0),
        max_fixups: int = 1,
    ) -> None:
        self.store = store
        self.repository = repository
        self.llm = llm
        self.registry = registry
        self.model = model
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.token_budget = token_budget
        self.sandbox = sandbox
        """Where the task's checks run again on its assembled repository (None: they do not)."""
        self.check_limits = check_limits
        self.max_fixups = max_fixups
        """Fix-up rounds (a subtask for an expert) a task gets when its repository fails its checks."""
        self.inflight = InFlight()

    def cancel(self, task_id: str, reason: str) -> int:
        return len(self.inflight.cancel(task_id, reason))

    async def synthesize(self, event: SynthesisRequested, *, redelivered: bool = False) -> TaskFinished | PlanReady | None:
        """The task's end (`TaskFinished`), or, when its repository fails its checks and a
        fix-up round is left, its next round (`PlanReady`: a fix-up subtask is to run)."""
        try:
            begun = await self.store.mutate(event.task_id, lambda s: _begin(s, redelivered))
        except TaskNotFound:
            return None
        state = begun.state
        if not begun.changed:
            # Done already (a redelivery): re-announcing is harmless, it is deduplicated.
            if state.status.terminal:
                return TaskFinished(task_id=state.id, status=state.status.value, round=event.round)
            return None
        master = self.registry.master(state.master_id) or JASON
        telemetry.agent_is(master.name, master.id)
        with self._scratch(state) as workdir:
            verification = await self._verify(state, workdir)
            if verification is not None and not verification.passed and self._fixable(state, verification):
                fixed = await self.store.mutate(state.id, lambda s: _fix_up(s, verification, self.max_fixups))
                return PlanReady(task_id=state.id, round=fixed.value) if fixed.changed else None
            return await self._synthesize(event, state, master, verification, workdir)

    @contextlib.contextmanager
    def _scratch(self, state: TaskState) -> Iterator[Path | None]:
        """Where the repository's files are written to run its checks; None when there are no
        checks to run, or no writable temporary directory (a read-only container: said in the
        verification)."""
        if not task_checks(state) or self.sandbox is None or not self.sandbox.available:
            yield None
            return
        try:
            scratch = tempfile.TemporaryDirectory(prefix="aether-verify-")
        except OSError as exc:
            log.warning("task %s: no directory to check the repository in: %s", state.id, exc)
            yield None
            return
        with scratch as directory:
            yield Path(directory)

    async def _verify(self, state: TaskState, workdir: Path | None, extra: dict[str, bytes] | None = None) -> Verification | None:
        """Every completed subtask's checks on the repository's files as they stand; None when
        there are none (or this synthesizer runs no checks)."""
        checks = task_checks(state)
        if not checks or self.sandbox is None:
            return None
        if workdir is None:
            reason = self.sandbox.reason if not self.sandbox.available else "no writable temporary directory here"
            return Verification(passed=False, checks=[], note=f"the repository's checks could not run: {reason}")
        await self.repository.materialize(state, workdir, extra)
        with telemetry.span("verify", {telemetry.TASK_ID: state.id, "aether.checks": len(checks)}):
            return await run_checks(self.sandbox, checks, workdir, self.check_limits)

    def _fixable(self, state: TaskState, verification: Verification) -> bool:
        return bool(self.sandbox and self.sandbox.available) and state.fixups < self.max_fixups and bool(
            [c for c in verification.checks if not c.passed]
        )

    async def _synthesize(
        self, event: SynthesisRequested, state: TaskState, master: MasterConfig, verification: Verification | None,
        workdir: Path | None,
    ) -> TaskFinished | None:
        usage, note = Usage(), None
        messages = synthesis_messages(state, master, files=await self.repository.brief_files(state))
        notes = TaskNotes(self.store, state.id, "Synthesis")
        try:
            bound = reply_bound(self.max_tokens, self.token_budget, state.usage.total_tokens, messages)
            reply = await self.inflight.run(
                state.id,
                self.llm.chat(
                    messages,
                    model=master.model or self.model,
                    headers=aether_headers("synthesizer", state.id),
                    max_tokens=bound,
                    usage=usage,
                    on_retry=notes.retry,
                    on_note=notes.note,
                    deadline=time.monotonic() + self.timeout_s,
                    agent_name=master.name,
                    agent_id=master.id,
                ),
            )
            text = reply.text
        except Cancelled:
            # The task was cancelled (or timed out) meanwhile; its state says so. The tokens count.
            await record_spent(self.store, state.id, usage)
            return None
        except (LLMCallError, BudgetSpent) as exc:
            log.warning("task %s: synthesis failed, concatenating the results: %s", state.id, exc)
            note = f"Synthesis LLM call failed ({exc}); the results were concatenated instead"
            text = concatenate(state, str(exc))
        assembly = await self.repository.assemble(state, text, master)
        if verification is not None and any(path != README for path in assembly.written):
            # Jason's files (a resolved conflict) are part of the repository: check it again.
            verification = await self._verify(state, workdir, assembly.written)
        done = await self.store.mutate(
            state.id, lambda s: _complete(assembly.apply(s), assembly.text, usage, note, verification)
        )
        final = done.state.status
        if not final.terminal:
            return None
        return TaskFinished(task_id=state.id, status=final.value, round=event.round)
