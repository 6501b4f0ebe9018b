"""Task states for the pure functions' tests: subtasks by id and dependencies, nothing else."""

from aether_contracts.state import Subtask, TaskState, TaskStatus


def task(*subtasks: tuple[str, list[str]], status: TaskStatus = TaskStatus.EXECUTING) -> TaskState:
    return TaskState(
        id="t",
        description="d",
        status=status,
        subtasks=[Subtask(id=i, description=i, agent_type="fullstack", depends_on=d) for i, d in subtasks],
    )
