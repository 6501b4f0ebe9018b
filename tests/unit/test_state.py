"""The task state model's own invariant: one subtask per id (issue 19, finding 6)."""

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from aether_contracts.state import EventKind, InvalidTaskState, Subtask, TaskState, TaskStatus


def subtasks(*ids: str) -> list[Subtask]:
    return [Subtask(id=i, description=i, agent_type="fullstack") for i in ids]


def test_a_state_with_two_subtasks_of_one_id_cannot_be_built():
    with pytest.raises(ValidationError, match=r"subtask id 'a\.1\.1' is used by more than one subtask"):
        TaskState(id="t", description="d", subtasks=subtasks("a", "a.1.1", "b", "a.1.1"))
    raw = TaskState(id="t", description="d", subtasks=subtasks("a", "b")).model_dump(mode="json")
    raw["subtasks"][1]["id"] = "a"
    with pytest.raises(ValidationError, match="'a' is used by more than one"):
        TaskState.model_validate(raw)


def test_a_change_in_place_is_caught_by_check():
    state = TaskState(id="t", description="d", subtasks=subtasks("a", "b"))
    state.check()
    state.subtasks.append(Subtask(id="b", description="again", agent_type="fullstack"))
    with pytest.raises(InvalidTaskState, match="'b'"):
        state.check()


def test_stored_states_load_as_they_are():
    # A state from before this check, with fields added since missing, loads with their defaults.
    old = {"id": "t", "description": "d", "status": "executing", "subtasks": [
        {"id": "a", "description": "a", "agent_type": "fullstack", "status": "completed", "result": "r"},
        {"id": "b", "description": "b", "agent_type": "fullstack", "depends_on": ["a"]},
    ]}
    state = TaskState.from_bytes(json.dumps(old).encode())
    assert [s.id for s in state.subtasks] == ["a", "b"] and state.subtask("b").replaced_by == []
    assert TaskState.from_bytes(state.to_bytes()) == state

    # One that a replan broke (the finding) is still readable, so it can be shown and failed;
    # `check` (which the store runs before writing) refuses it.
    old["subtasks"].append({"id": "a", "description": "replacement", "agent_type": "fullstack"})
    broken = TaskState.from_bytes(json.dumps(old).encode())
    assert [s.id for s in broken.subtasks] == ["a", "b", "a"] and broken.status == TaskStatus.EXECUTING
    with pytest.raises(InvalidTaskState):
        broken.check()


def test_every_history_entry_is_recorded_with_an_event_kind():
    """Issue 17: event kinds are one enum. A literal kind in a `record(...)` call (a typo
    nobody's filter matches) is caught here; the history keeps the plain value."""
    root = Path(__file__).resolve().parents[2]
    literal = re.compile(r"""(?:\.record|\._record)\(\s*["']""")
    found = [
        f"{path.relative_to(root)}:{source[: m.start()].count(chr(10)) + 1}"
        for folder in ("libs", "services")
        for path in (root / folder).rglob("*.py")
        for source in [path.read_text()]
        for m in literal.finditer(source)
    ]
    assert not found, f"record(...) with a literal kind, not an EventKind: {found}"
    state = TaskState(id="t", description="d")
    event = state.record(EventKind.PLAN_READY, "planned")
    assert json.loads(state.model_dump_json())["events"][0]["kind"] == "plan.ready" == event.kind
    assert len({k.value for k in EventKind}) == len(EventKind)
