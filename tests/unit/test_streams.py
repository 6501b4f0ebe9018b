"""The live streams' fan-out and resume rules (aether_gateway.streams), with real task states."""

import asyncio
from datetime import timedelta

import pytest

from aether_contracts.state import Subtask, SubtaskStatus, TaskState, TaskStatus
from aether_gateway.streams import (
    BoardFeed,
    BoardItem,
    StreamHub,
    TaskFeed,
    TooManyStreams,
    resume_position,
)


def new_task(task_id: str = "t1", *, minutes_ago: int = 0) -> TaskState:
    state = TaskState(id=task_id, description=f"task {task_id}")
    state.created_at -= timedelta(minutes=minutes_ago)
    state.record("task.created", "Task created")
    return state


def evolve(state: TaskState) -> list[TaskState]:
    """The states a two-subtask task goes through, each a copy as a KV revision would hold it."""
    states = []

    def snap() -> None:
        states.append(state.model_copy(deep=True))

    state.set_status(TaskStatus.PLANNING, "planning")
    snap()
    state.subtasks = [Subtask(id="a", description="A", agent_type="python-backend"),
                      Subtask(id="b", description="B", agent_type="testing-expert", depends_on=["a"])]
    state.record("plan.ready", "Plan ready")
    state.set_status(TaskStatus.EXECUTING, "executing")
    snap()
    for subtask in state.subtasks:
        state.set_subtask_status(subtask, SubtaskStatus.EXECUTING, f"{subtask.id} started")
        snap()
        subtask.result = f"result of {subtask.id}"
        state.set_subtask_status(subtask, SubtaskStatus.COMPLETED, f"{subtask.id} completed")
        snap()
    state.set_status(TaskStatus.SYNTHESIZING, "synthesizing")
    snap()
    state.final_result = "all done"
    state.set_status(TaskStatus.COMPLETED, "completed")
    snap()
    return states


def seqs(messages) -> list[int]:
    return [int(m.id) for m in messages if m.type == "task.event"]


def test_a_task_feed_sends_each_event_once_then_the_state_and_the_end():
    states = evolve(new_task())
    feed = TaskFeed("t1")
    received = []
    for revision, state in enumerate(states, start=10):
        feed.offer(state, revision)
        received += feed.drain()
    last = states[-1].events[-1].seq
    assert seqs(received) == list(range(1, last + 1))
    assert [m.type for m in received[-2:]] == ["task.state", "task.end"]
    assert received[-2].data.final_result == "all done" and received[-2].data.revision == 10 + len(states) - 1
    assert received[-1].data.status == TaskStatus.COMPLETED and received[-1].data.last_seq == last
    assert feed.ended and feed.drain() == []


def test_revisions_the_watch_skipped_lose_no_event_because_each_state_holds_the_history():
    states = evolve(new_task())
    feed = TaskFeed("t1")
    feed.offer(states[0], 1)
    first = feed.drain()
    feed.offer(states[-1], 9)  # everything in between was coalesced or skipped
    rest = feed.drain()
    assert seqs(first + rest) == list(range(1, states[-1].events[-1].seq + 1))
    assert sum(m.type == "task.state" for m in first + rest) == 2


def test_only_the_newest_state_waits_and_older_revisions_are_ignored():
    states = evolve(new_task())
    feed = TaskFeed("t1")
    feed.offer(states[3], 4)
    feed.offer(states[1], 2)  # late and older: ignored
    feed.offer(states[4], 5)
    messages = feed.drain()
    assert [m.data.revision for m in messages if m.type == "task.state"] == [5]
    feed.offer(states[4], 5)  # the same revision again (a restarted watch): nothing new
    assert feed.drain() == []


@pytest.mark.parametrize("after", [0, 1, 4, 7])
def test_a_client_that_resumes_after_a_seq_gets_exactly_the_rest(after):
    states = evolve(new_task())
    feed = TaskFeed("t1", after=after)
    feed.offer(states[-1], 50)
    assert seqs(feed.drain()) == list(range(after + 1, states[-1].events[-1].seq + 1))


def test_a_resume_position_beyond_the_history_sends_only_the_state():
    states = evolve(new_task())
    feed = TaskFeed("t1", after=10_000)
    feed.offer(states[2], 3)
    assert [m.type for m in feed.drain()] == ["task.state"]


def test_a_deleted_task_ends_its_feed_with_a_410():
    feed = TaskFeed("t1")
    feed.offer(new_task(), 1)
    feed.drain()
    feed.offer(None, 2)
    (message,) = feed.drain()
    assert message.type == "error" and message.data.status == 410 and feed.ended


def test_the_hub_fans_out_to_the_feeds_of_that_task_only_and_forgets_closed_ones():
    hub = StreamHub()
    one, other = new_task("t1"), new_task("t2")
    with hub.task_feed("t1") as first, hub.task_feed("t1") as second, hub.task_feed("t2") as third:
        assert hub.subscribers == 3
        hub.on_change("t1", one, 1)
        assert seqs(first.drain()) == seqs(second.drain()) == [1]
        assert third.drain() == []
        hub.on_change("t2", other, 2)
        assert seqs(third.drain()) == [1]
    assert hub.subscribers == 0
    hub.on_change("t1", one, 3)  # nobody listens: nothing breaks


async def test_next_waits_for_a_change_and_returns_nothing_once_ended():
    states = evolve(new_task())
    feed = TaskFeed("t1")
    waiting = asyncio.create_task(feed.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    feed.offer(states[0], 1)
    assert seqs(await waiting) == [1, 2]
    feed.offer(states[-1], 2)
    assert (await feed.next())[-1].type == "task.end"
    assert await feed.next() == []


def board_types(messages) -> list[tuple[str, str]]:
    return [(m.type, m.data.id if m.type != "board.ready" else "") for m in messages]


def test_the_board_sends_one_summary_per_changed_task_in_revision_order_and_ready_once():
    hub = StreamHub()
    a, b, c = new_task("a"), new_task("b"), new_task("c")
    hub.on_change("a", a, 1)
    hub.on_change("b", b, 2)
    with hub.board_feed(after=0) as feed:
        first = feed.drain()
        assert board_types(first) == [("board.task", "a"), ("board.task", "b"), ("board.ready", "")]
        assert first[-1].id == "2"
        hub.on_change("c", c, 3)
        a.set_status(TaskStatus.PLANNING, "planning")
        hub.on_change("a", a, 4)
        hub.on_change("c", c, 5)  # c changed twice while the client was busy: sent once, at 5
        later = feed.drain()
    assert board_types(later) == [("board.task", "a"), ("board.task", "c")]
    assert [m.id for m in later] == ["4", "5"]
    assert later[0].data.status == TaskStatus.PLANNING and later[0].data.last_event.message == "planning"


def test_a_board_client_resuming_from_a_revision_gets_every_task_changed_since_each_once():
    hub = StreamHub()
    for revision, name in enumerate("abcde", start=1):
        hub.on_change(name, new_task(name), revision)
    hub.on_change("b", new_task("b"), 6)
    hub.on_change("d", None, 7)
    with hub.board_feed(after=3) as feed:
        messages = feed.drain()
    assert [(m.type, m.id) for m in messages] == [
        ("board.task", "5"),
        ("board.task", "6"),
        ("board.removed", "7"),
        ("board.ready", "7"),
    ]
    assert [messages[0].data.id, messages[1].data.id, messages[2].data.id] == ["e", "b", "d"]


def test_without_a_position_the_backlog_is_the_newest_tasks_and_the_position_is_the_hubs():
    hub = StreamHub()
    for n in range(6):
        hub.on_change(f"t{n}", new_task(f"t{n}", minutes_ago=10 - n), 100 - n)  # newest has the lowest revision
    hub.on_change("gone", None, 101)
    with hub.board_feed(newest=3) as feed:
        messages = feed.drain()
        assert [m.data.id for m in messages[:-1]] == ["t5", "t4", "t3"]  # revision order: 95, 96, 97
        assert messages[-1].type == "board.ready" and messages[-1].id == "101"
        hub.on_change("t0", new_task("t0"), 102)  # an older task that changed: the client hears of it
        assert [m.data.id for m in feed.drain()] == ["t0"]


async def test_a_board_feed_answers_at_once_even_when_nothing_exists():
    hub = StreamHub()
    with hub.board_feed() as feed:
        assert [m.type for m in await feed.next()] == ["board.ready"]
        waiting = asyncio.create_task(feed.next())
        await asyncio.sleep(0)
        assert not waiting.done()
        hub.on_change("x", new_task("x"), 1)
        assert [m.id for m in await waiting] == ["1"]


def test_a_board_feed_ignores_what_it_has_already_sent():
    feed = BoardFeed(after=10)
    feed.offer(BoardItem("a", 10, None))
    assert [m.type for m in feed.drain()] == ["board.ready"]
    hub = StreamHub()
    hub.on_change("a", new_task("a"), 9)
    with hub.board_feed(after=10) as feed:
        assert [m.type for m in feed.drain()] == ["board.ready"]


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), (" 7 ", 7), ("0", 0)])
def test_resume_positions_parse(raw, expected):
    assert resume_position(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "abc", "1.5", "9" * 30, "0x10"])
def test_malformed_resume_positions_are_refused_with_a_message(raw):
    with pytest.raises(ValueError, match="must be a non-negative integer"):
        resume_position(raw, "Last-Event-ID")


def test_a_tenants_board_carries_only_its_own_tasks_deletions_included():
    hub = StreamHub()
    alices, bobs = new_task("a"), new_task("b")
    alices.tenant, bobs.tenant = "alice", "bob"
    hub.on_change("a", alices, 1)
    hub.on_change("b", bobs, 2)
    with hub.board_feed(after=0, tenant="alice") as alice, hub.board_feed(tenant="bob") as bob:
        assert [(m.type, m.id) for m in alice.drain()] == [("board.task", "1"), ("board.ready", "1")]
        hub.on_change("b", bobs, 3)
        hub.on_change("a", None, 4)
        assert [(m.type, m.id) for m in alice.drain()] == [("board.removed", "4")]
        assert [(m.type, m.id) for m in bob.drain()] == [("board.task", "3"), ("board.ready", "3")]
    with hub.board_feed(after=0) as everyone:  # authentication off: one anonymous tenant sees all
        assert [m.id for m in everyone.drain()] == ["3", "4", "4"]


def test_streams_are_admitted_up_to_the_clients_limit_and_the_total_and_released_on_exit():
    hub = StreamHub(per_client=2, total=3)
    with hub.admit("tenant 'a'"), hub.admit("tenant 'a'"):
        with pytest.raises(TooManyStreams, match=r"tenant 'a' has 2 live streams open.*AETHER_STREAMS_PER_CLIENT") as refused:
            with hub.admit("tenant 'a'"):
                pass
        assert refused.value.limit == "per_client"
        with hub.admit("tenant 'b'"):  # another client is not held back by the first one
            assert hub.open_streams == 3
            with pytest.raises(TooManyStreams, match=r"3 live streams open.*AETHER_STREAMS_TOTAL") as refused:
                with hub.admit("tenant 'c'"):
                    pass
            assert refused.value.limit == "total"
    assert hub.open_streams == 0
    with hub.admit("tenant 'a'"), hub.admit("tenant 'a'"):  # the slots came back
        pass


def test_a_stream_that_fails_gives_its_slot_back():
    hub = StreamHub(per_client=1)
    with pytest.raises(RuntimeError), hub.admit("address 127.0.0.1"):
        raise RuntimeError("the client left")
    with hub.admit("address 127.0.0.1"):
        assert hub.open_streams == 1
