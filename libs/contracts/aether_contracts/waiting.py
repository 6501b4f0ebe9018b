"""What waits for a person (issue 15): an expert's conversation paused on a question.

When an expert calls `ask_user`, its agent stores the conversation so far in the Object Store
(`conversation_object`: named by its content, so it is written once and never rewritten), points
the subtask's state at it and lets go: no agent, LLM connection or message is held while the
question is open. The answer comes through the gateway into the task state; the scheduler then
queues the subtask again, and any agent of its type reads this record back and continues the
loop with the answer as the `ask_user` call's result.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, Field

from .state import Usage, Verification
from .workspace import WorkspaceFile

MAX_QUESTION_CHARS = 4_000
"""Longest question an expert may ask (a longer one is a tool error it reads)."""
MAX_ANSWER_CHARS = 20_000
"""Longest answer a person may give."""
MAX_REASON_CHARS = 2_000
"""Longest reason for rejecting a plan."""


class PausedConversation(BaseModel):
    task_id: str
    subtask_id: str
    question_no: int
    """The subtask's `questions` count that this question made."""
    question: str
    call_id: str
    """The `ask_user` call whose result the answer becomes."""
    messages: list[dict[str, Any]]
    """The conversation up to the reply that asked, with the results of that reply's other calls."""
    answer_at: int
    """Where in `messages` the answer's `role: tool` message goes (the calls' order is kept)."""
    nonce: str
    """The conversation's frame nonce: the answer is framed as data with it."""
    model: str = ""
    steps: int = 0
    tool_errors: int = 0
    errors_in_a_row: int = 0
    fix_round: int = 0
    check_index: int = 0
    verification: Verification | None = None
    worktree: list[WorkspaceFile] = Field(default_factory=list)
    """What the expert had written in its worktree so far (in the Object Store): put back in a
    fresh worktree, on whichever agent resumes."""
    usage: Usage = Field(default_factory=Usage)
    """What the run cost until it asked (already counted in the task state)."""

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def conversation_object(task_id: str, subtask_id: str, sha256: str) -> str:
    """Object Store name of a paused conversation: by content, so never rewritten."""
    return f"tasks/{quote(task_id, safe='')}/subtasks/{quote(subtask_id, safe='')}/conversations/{sha256}"
