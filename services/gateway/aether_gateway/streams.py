"""Live streams of task changes, with resume: the fan-out from the KV watch to the subscribers.

Two kinds of feed, both fed by the gateway's watch on the `tasks` bucket (`TaskIndex.listeners`):

- A `TaskFeed` follows one task: its events (by `seq`, gap-free) and its state after each change.
  Every KV revision holds the task's whole history, so a feed keeps only the newest state it was
  offered and derives the events it has not sent yet from it. A slow client therefore never makes
  the gateway hold more than one state for it, and a revision the watch skipped loses nothing.
- A `BoardFeed` follows every task: one summary per change, in KV revision order. Only the newest
  summary of each task waits to be sent, so what a client receives after a pause is every task
  that changed meanwhile, each once, oldest change first.

A client resumes by giving the last position it saw (an event's `seq`, a summary's revision) and
receives each missed event exactly once, in order. Nothing here knows about FastAPI:
`routes/stream.py` turns the messages into Server-Sent Events or WebSocket frames.

How many streams are open is bounded too (issue 18): per client (a tenant, or a peer address
when authentication is off) and in all; a stream over either limit is refused with the reason
(`StreamHub.admit`). A client that stops reading is the transport's business (`connections.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass

from aether_contracts.events import ToolStep
from aether_contracts.state import TaskState

from .schemas import (
    BoardReady,
    BoardReadyMessage,
    BoardRemoved,
    BoardRemovedMessage,
    BoardTaskMessage,
    StreamError,
    StreamErrorMessage,
    TaskEnd,
    TaskEndMessage,
    TaskEventMessage,
    TaskStateMessage,
    TaskStepMessage,
    TaskSummary,
    event_body,
    task_state_body,
    task_summary,
)

TaskMessage = TaskEventMessage | TaskStateMessage | TaskStepMessage | TaskEndMessage | StreamErrorMessage
STEPS_WAITING = 200
"""Steps a feed keeps for a slow client; older ones are dropped (the steps route has them all)."""
BoardMessage = BoardTaskMessage | BoardRemovedMessage | BoardReadyMessage


class TaskFeed:
    def __init__(self, task_id: str, after: int = 0) -> None:
        self.task_id = task_id
        self.seq = after
        """The last event sent (or the client's resume position)."""
        self.revision = 0
        """The KV revision of the last state sent."""
        self.ended = False
        self.state: TaskState | None = None
        """The last state drained (what the client was last told)."""
        self._latest: tuple[TaskState | None, int] | None = None
        self._steps: deque[ToolStep] = deque(maxlen=STEPS_WAITING)
        self._changed = asyncio.Event()

    def offer_step(self, step: ToolStep) -> None:
        """An expert's tool call, live (never blocks; a slow client loses the oldest)."""
        if not self.ended:
            self._steps.append(step)
            self._changed.set()

    def offer(self, state: TaskState | None, revision: int) -> None:
        """Called with every change of the task (None: it was deleted); never blocks."""
        newest = self._latest[1] if self._latest is not None else self.revision
        if revision <= newest:
            return
        self._latest = (state, revision)
        self._changed.set()

    def drain(self) -> list[TaskMessage]:
        """What the client has not seen of the newest state: new events, then the state itself."""
        self._changed.clear()
        steps: list[TaskMessage] = [TaskStepMessage(data=step) for step in self._steps]
        self._steps.clear()
        if self._latest is None or self.ended:
            return [] if self.ended else steps
        state, revision = self._latest
        self._latest = None
        self.revision = revision
        self.state = state or self.state
        if state is None:
            self.ended = True
            return [
                StreamErrorMessage(data=StreamError(status=410, detail=f"task '{self.task_id}' was deleted"))
            ]
        messages: list[TaskMessage] = [*steps] + [
            TaskEventMessage(id=str(event.seq), data=event_body(state.id, event))
            for event in state.events
            if event.seq > self.seq
        ]
        if state.events:
            self.seq = max(self.seq, state.events[-1].seq)
        messages.append(TaskStateMessage(data=task_state_body(state, revision)))
        if state.status.terminal:
            self.ended = True
            messages.append(
                TaskEndMessage(data=TaskEnd(task_id=state.id, status=state.status, last_seq=self.seq))
            )
        return messages

    async def next(self) -> list[TaskMessage]:
        """Wait for a change the client has not seen; [] once the task has ended."""
        while not self.ended:
            messages = self.drain()
            if messages:
                return messages
            await self._changed.wait()
        return []


@dataclass(frozen=True)
class BoardItem:
    task_id: str
    revision: int
    summary: TaskSummary | None
    """None: the task was deleted."""
    tenant: str | None = None

    def message(self) -> BoardTaskMessage | BoardRemovedMessage:
        if self.summary is None:
            return BoardRemovedMessage(
                id=str(self.revision), data=BoardRemoved(id=self.task_id, revision=self.revision)
            )
        return BoardTaskMessage(id=str(self.revision), data=self.summary)


class BoardFeed:
    def __init__(self, after: int = 0, *, tenant: str | None = None) -> None:
        self.revision = after
        """The client's position: every change up to this revision has been sent (or was not wanted)."""
        self.tenant = tenant
        """Only this tenant's tasks (None: every task, when authentication is off)."""
        self._pending: dict[str, BoardItem] = {}
        self._changed = asyncio.Event()
        self._greeted = False
        self._changed.set()  # the first drain answers at once, if only with `board.ready`

    def offer(self, item: BoardItem) -> None:
        if item.revision <= self.revision or (self.tenant is not None and item.tenant != self.tenant):
            return
        pending = self._pending.get(item.task_id)
        if pending is None or pending.revision < item.revision:
            self._pending[item.task_id] = item
            self._changed.set()

    def drain(self) -> list[BoardMessage]:
        self._changed.clear()
        items = sorted(self._pending.values(), key=lambda i: i.revision)
        self._pending.clear()
        messages: list[BoardMessage] = [item.message() for item in items]
        if items:
            self.revision = max(self.revision, items[-1].revision)
        if not self._greeted:
            self._greeted = True
            messages.append(BoardReadyMessage(id=str(self.revision), data=BoardReady(revision=self.revision)))
        return messages

    async def next(self) -> list[BoardMessage]:
        while True:
            await self._changed.wait()
            messages = self.drain()
            if messages:
                return messages


class TooManyStreams(Exception):
    """A stream refused by a limit; the message says which and what to do."""

    def __init__(self, detail: str, limit: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.limit = limit
        """`per_client` or `total`."""


class StreamHub:
    """Registered as a `TaskIndex` listener before the watch starts, so it sees every change."""

    def __init__(self, *, per_client: int | None = None, total: int | None = None) -> None:
        self.per_client = per_client
        self.total = total
        self._open: Counter[str] = Counter()
        """Streams open per client (see `admit`)."""
        self.revision = 0
        """The newest KV revision the watch delivered."""
        self._board: dict[str, BoardItem] = {}
        """The newest change of every task, deletions included, as the watch delivered it.

        Kept apart from the index, which the submit route also updates directly: a board client
        must not be told about revision N before the watch delivered the changes below N.
        """
        self._task_feeds: dict[str, set[TaskFeed]] = {}
        self._board_feeds: set[BoardFeed] = set()

    def on_change(self, task_id: str, state: TaskState | None, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if state is not None:
            item = BoardItem(task_id, revision, task_summary(state, revision), state.tenant)
        else:
            known = self._board.get(task_id)
            item = BoardItem(task_id, revision, None, known.tenant if known else None)
        self._board[task_id] = item
        for board in self._board_feeds:
            board.offer(item)
        for feed in self._task_feeds.get(task_id, ()):
            feed.offer(state, revision)

    def on_step(self, step: ToolStep) -> None:
        """A step published by an agent (the gateway subscribes to every one)."""
        for feed in self._task_feeds.get(step.task_id, ()):
            feed.offer_step(step)

    @property
    def subscribers(self) -> int:
        return len(self._board_feeds) + sum(len(f) for f in self._task_feeds.values())

    @property
    def open_streams(self) -> int:
        return self._open.total()

    @contextlib.contextmanager
    def admit(self, client: str) -> Iterator[None]:
        """Hold one of the streams `client` may have open (e.g. "tenant 'acme'") for the block;
        TooManyStreams when the client or the gateway has as many as allowed."""
        if self.total is not None and self.open_streams >= self.total:
            raise TooManyStreams(
                f"this gateway has {self.total} live streams open, as many as it serves "
                "(AETHER_STREAMS_TOTAL): try again later",
                "total",
            )
        if self.per_client is not None and self._open[client] >= self.per_client:
            raise TooManyStreams(
                f"{client} has {self._open[client]} live streams open on this gateway, as many as one "
                "client may (AETHER_STREAMS_PER_CLIENT): close one first",
                "per_client",
            )
        self._open[client] += 1
        try:
            yield
        finally:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]

    @contextlib.contextmanager
    def task_feed(self, task_id: str, after: int = 0) -> Iterator[TaskFeed]:
        """Subscribe first, then offer the state read from the store: no change falls in between."""
        feed = TaskFeed(task_id, after)
        self._task_feeds.setdefault(task_id, set()).add(feed)
        try:
            yield feed
        finally:
            feeds = self._task_feeds.get(task_id)
            if feeds is not None:
                feeds.discard(feed)
                if not feeds:
                    del self._task_feeds[task_id]

    @contextlib.contextmanager
    def board_feed(
        self, after: int | None = None, *, newest: int = 50, tenant: str | None = None
    ) -> Iterator[BoardFeed]:
        """`after`: every change since that revision. None: the `newest` tasks by creation.

        With a `tenant`, only that tenant's tasks (and their deletions) are sent.
        """
        if after is None:
            feed = BoardFeed(0, tenant=tenant)
            live = [
                i for i in self._board.values() if i.summary is not None and (tenant is None or i.tenant == tenant)
            ]
            live.sort(key=lambda i: (i.summary.created_at, i.task_id), reverse=True)  # type: ignore[union-attr]
            for item in live[:newest]:
                feed.offer(item)
            # Older tasks that are not sent are not wanted: the client starts from here.
            feed.revision = self.revision
        else:
            feed = BoardFeed(after, tenant=tenant)
            for item in self._board.values():
                feed.offer(item)
        self._board_feeds.add(feed)
        try:
            yield feed
        finally:
            self._board_feeds.discard(feed)


def resume_position(raw: str | None, name: str = "after") -> int | None:
    """A client's resume position as given (query or `Last-Event-ID`); ValueError if malformed."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 18:
        raise ValueError(f"{name} must be a non-negative integer (the last id received), not {raw[:40]!r}")
    return int(text)
