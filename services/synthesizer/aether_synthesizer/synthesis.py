"""Jason's synthesis: integrate the subtasks' results into one answer. No broker in here.

If the LLM cannot be reached the results are concatenated instead, and the task log says so.
Failed subtasks are named as missing; the synthesis never pretends they succeeded.
"""

from __future__ import annotations

import time

from aether_contracts.events import SynthesisRequested, TaskFinished
from aether_contracts.state import Subtask, SubtaskStatus, TaskState, TaskStatus, Usage
from aether_core import telemetry
from aether_core.inflight import Cancelled, InFlight
from aether_core.llm import LLMCallError, LLMClient, aether_headers
from aether_core.prompting import frame, new_nonce, rules
from aether_core.store import TaskNotFound, TaskStore, Unchanged
from aether_core.templates import JASON, MasterConfig, Registry

from .repository import Repository, workspace_brief

RESULT_CHARS = 24_000


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
    analysis = str((state.plan or {}).get("analysis") or "")
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
    state.record("synthesis.started", f"Jason started the synthesis{again}")
    return state


def _complete(state: TaskState, text: str, usage: Usage, note: str | None) -> bool:
    if state.status != TaskStatus.SYNTHESIZING:
        raise Unchanged(False)  # cancelled meanwhile, or completed by a twin
    state.final_result = text
    state.usage.add(usage)
    if note:
        state.record("synthesis.fallback", note, level="warning")
    missing = missing_parts(state)
    suffix = f"; {len(missing)} part(s) missing" if missing else ""
    state.set_status(TaskStatus.COMPLETED, f"Task completed{suffix}")
    return True


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
    ) -> None:
        self.store = store
        self.repository = repository
        self.llm = llm
        self.registry = registry
        self.model = model
        self.timeout_s = timeout_s
        self.inflight = InFlight()

    def cancel(self, task_id: str, reason: str) -> int:
        return len(self.inflight.cancel(task_id, reason))

    async def synthesize(self, event: SynthesisRequested, *, redelivered: bool = False) -> TaskFinished | None:
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
        telemetry.annotate({telemetry.AGENT_TYPE: master.id})
        usage, note = Usage(), None
        messages = synthesis_messages(state, master, files=await self.repository.brief_files(state))
        try:
            reply = await self.inflight.run(
                state.id,
                self.llm.chat(
                    messages,
                    model=master.model or self.model,
                    headers=aether_headers("synthesizer", state.id),
                    on_retry=self._note_retry(state.id),
                    deadline=time.monotonic() + self.timeout_s,
                    agent_name=master.name,
                    agent_id=master.id,
                ),
            )
            text, usage = reply.text, reply.usage
        except Cancelled:
            return None  # the task was cancelled (or timed out) meanwhile; its state says so
        except LLMCallError as exc:
            note = f"Synthesis LLM call failed ({exc}); the results were concatenated instead"
            text = concatenate(state, str(exc))
        assembly = await self.repository.assemble(state, text, master)
        done = await self.store.mutate(
            state.id, lambda s: _complete(assembly.apply(s), assembly.text, usage, note)
        )
        final = done.state.status
        if not final.terminal:
            return None
        return TaskFinished(task_id=state.id, status=final.value, round=event.round)

    def _note_retry(self, task_id: str):
        async def note(attempt: int, wait: float, reason: str) -> None:
            def change(state: TaskState) -> None:
                state.record(
                    "llm.retry",
                    f"Synthesis LLM call failed ({reason}); retry {attempt} in {wait:.1f}s",
                    level="warning",
                )

            await self.store.mutate(task_id, change)

        return note
