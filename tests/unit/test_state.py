"""The task state model's own invariant: one subtask per id (issue 19, finding 6)."""

import json

import pytest
from pydantic import ValidationError

from aether_contracts.state import InvalidTaskState, Subtask, TaskState, TaskStatus


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
