"""Aether's tasks in A2A's terms (aether_gateway.a2a_tasks): plain functions, no broker."""

from a2a.types.a2a_pb2 import Message, Part, Role
from a2a.types.a2a_pb2 import TaskState as A2AState
from google.protobuf.json_format import MessageToDict

from aether_contracts.events import ToolStep
from aether_contracts.state import TaskState, TaskStatus
from aether_gateway import a2a_tasks
from aether_gateway.schemas import event_body


def test_every_aether_status_has_an_a2a_state_and_the_terminal_ones_stay_terminal():
    assert set(a2a_tasks.STATES) == set(TaskStatus)
    terminal = {A2AState.TASK_STATE_COMPLETED, A2AState.TASK_STATE_FAILED, A2AState.TASK_STATE_CANCELED}
    for status in TaskStatus:
        assert (a2a_tasks.a2a_state(status) in terminal) == status.terminal, status
    assert a2a_tasks.a2a_state(TaskStatus.PENDING) == A2AState.TASK_STATE_SUBMITTED
    assert a2a_tasks.aether_statuses(A2AState.TASK_STATE_WORKING) == {
        TaskStatus.PLANNING, TaskStatus.EXECUTING, TaskStatus.SYNTHESIZING
    }
    assert a2a_tasks.aether_statuses(A2AState.TASK_STATE_CANCELED) == {TaskStatus.CANCELLED}
    # A plan waiting for its approval waits for the caller (issue 15).
    assert a2a_tasks.aether_statuses(A2AState.TASK_STATE_INPUT_REQUIRED) == {TaskStatus.AWAITING_APPROVAL}


def _created(message: Message | None = None) -> TaskState:
    state = TaskState(id="t-1", description="Build it")
    state.record("task.created", "Task created", data=a2a_tasks.origin(message) if message else None)
    return state


def test_the_callers_context_and_message_id_come_back_and_a_rest_task_is_a_context_of_its_own():
    asked = Message(message_id="m-7", context_id="ctx-9", role=Role.ROLE_USER, parts=[Part(text="Build it")])
    task = a2a_tasks.task(_created(asked))
    assert task.context_id == "ctx-9" and task.history[0].message_id == "m-7"
    assert task.history[0].role == Role.ROLE_USER and task.history[0].parts[0].text == "Build it"
    rest = a2a_tasks.task(_created())
    assert rest.context_id == "t-1" and rest.history[0].message_id == "t-1-request"
    assert a2a_tasks.task(_created(Message(message_id="m-8", role=Role.ROLE_USER))).context_id == "t-1"


def test_a_failed_task_says_its_error_and_carries_its_aether_status():
    state = _created()
    state.error = "the planner gave up"
    state.set_status(TaskStatus.FAILED, "Task failed", level="error")
    task = a2a_tasks.task(state)
    assert task.status.state == A2AState.TASK_STATE_FAILED
    assert task.status.message.parts[0].text == "the planner gave up"
    assert task.status.message.role == Role.ROLE_AGENT
    assert MessageToDict(task.metadata)["aether"]["status"] == "failed"


def test_a_history_entry_is_a_status_update_in_the_state_the_task_was_then_in():
    state = _created()
    event = state.record("subtask.status", "Subtask a completed", subtask_id="a", status="completed")
    update = a2a_tasks.event_update(state, event_body(state.id, event), TaskStatus.EXECUTING)
    assert update.status.state == A2AState.TASK_STATE_WORKING
    assert update.status.message.parts[0].text == "Subtask a completed"
    assert MessageToDict(update.metadata)["aether"]["event"] == {
        "seq": 2.0, "kind": "subtask.status", "level": "info", "subtaskId": "a", "status": "completed"
    }


def test_a_tool_step_is_a_working_update_naming_its_subtask_and_tool():
    state = _created()
    step = ToolStep(task_id="t-1", subtask_id="a", attempt=1, index=3, tool="run", call_id="c", arguments="{}", ok=False, summary="exit 1")
    update = a2a_tasks.step_update(state, step)
    assert update.status.state == A2AState.TASK_STATE_WORKING
    assert update.status.message.parts[0].text == "a: tool run failed: exit 1"
    assert update.status.message.message_id == "t-1-step-a-1-tool-3"
