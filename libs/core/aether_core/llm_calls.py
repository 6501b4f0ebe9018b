"""What every service that calls the LLM for a task needs around the call: the task log's notes
(a retry, a continuation), the reply's bound under the task's token budget, and the tokens of a
call that failed or was abandoned, written where the task's usage is counted."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aether_contracts.state import EventKind, TaskState, Usage

from .llm import estimate_prompt_tokens
from .store import TaskNotFound, TaskStore

log = logging.getLogger("aether.llm")

MIN_REPLY_TOKENS = 64
"""A call whose reply the budget would bound below this is not made: nothing useful fits."""


class BudgetSpent(Exception):
    """The task's token budget leaves no room for this call."""


class TaskNotes:
    """`on_retry` and `on_note` hooks for `LLMClient.chat` that record into the task's log.

    `what` starts each line: "Planning", "Synthesis", "Subtask <id>:".
    """

    def __init__(self, store: TaskStore, task_id: str, what: str, subtask_id: str | None = None) -> None:
        self.store = store
        self.task_id = task_id
        self.what = what
        self.subtask_id = subtask_id

    async def retry(self, attempt: int, wait: float, reason: str) -> None:
        await self._record(EventKind.LLM_RETRY, f"{self.what} LLM call failed ({reason}); retry {attempt} in {wait:.1f}s")

    async def note(self, message: str) -> None:
        await self._record(EventKind.LLM_NOTE, f"{self.what} LLM call: {message}")

    async def _record(self, kind: EventKind, message: str) -> None:
        def change(state: TaskState) -> None:
            state.record(kind, message, level="warning", subtask_id=self.subtask_id)

        try:
            await self.store.mutate(self.task_id, change)
        except TaskNotFound:
            pass


def reply_bound(
    max_tokens: int,
    budget: int | None,
    spent: int,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
) -> int:
    """`max_tokens` for the next request: the role's bound, capped by what the task's budget has
    left after this request's prompt; `BudgetSpent` when that leaves too little."""
    if budget is None:
        return max_tokens
    left = budget - spent - estimate_prompt_tokens(messages, tools)
    if left < MIN_REPLY_TOKENS:
        raise BudgetSpent(
            f"the task's token budget of {budget} leaves {max(0, budget - spent)} tokens, too few for "
            f"this call's prompt (about {estimate_prompt_tokens(messages, tools)}) and a reply"
        )
    return min(max_tokens, left)


async def record_spent(store: TaskStore, task_id: str, usage: Usage, subtask_id: str | None = None) -> None:
    """Count the tokens of a call whose result never reached the task (it failed, was cancelled or
    handed back): into the task's usage, and its subtask's."""
    if not usage.calls:
        return

    def change(state: TaskState) -> None:
        state.usage.add(usage)
        subtask = state.find_subtask(subtask_id) if subtask_id else None
        if subtask is not None:
            subtask.usage.add(usage)

    try:
        await store.mutate(task_id, change)
    except TaskNotFound:
        log.warning("task %s is gone: %d tokens of an abandoned call are not counted", task_id, usage.total_tokens)
