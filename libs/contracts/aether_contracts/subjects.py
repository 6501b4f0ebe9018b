"""Every NATS subject Aether uses. No other module spells a subject."""

PREFIX = "aether"

TASK_CREATED = "aether.task.created"
"""The gateway accepted a task (JetStream, deduplicated by task id)."""

PLAN_READY = "aether.plan.ready"
"""The planner stored a validated plan in the task state."""

SUBTASK_READY_PREFIX = "aether.subtask.ready"
"""`aether.subtask.ready.<agent_type>`: one subject per agent type, one durable consumer per type."""

SUBTASK_FINISHED = "aether.subtask.finished"
"""A worker finished a subtask, successfully or not (the outcome is in the body)."""

SYNTHESIS_REQUESTED = "aether.synthesis.requested"
"""Every subtask is terminal and at least one succeeded: Jason integrates the results."""

TASK_FINISHED = "aether.task.finished"
"""A task reached a terminal status (completed, failed, cancelled)."""

TASK_EXPIRED = "aether.task.expired"
"""Fired by NATS itself at a task's deadline (a JetStream message schedule set at creation)."""

REPLAN_REQUESTED = "aether.plan.replan"
"""Jason is asked for replacement sub-plans for failed subtasks."""

DEADLINE_PREFIX = "aether.deadline"
"""`aether.deadline.<task id>`: holds a task's deadline schedule (one per task, rolled up)."""

APPROVAL_DEADLINE_PREFIX = f"{DEADLINE_PREFIX}.approval"
"""`aether.deadline.approval.<task id>`: holds the deadline of a plan waiting for approval."""

QUESTION_DEADLINE_PREFIX = f"{DEADLINE_PREFIX}.question"
"""`aether.deadline.question.<task id>.<subtask id>`: holds the deadline of an expert's open
question (one per subtask: a later question's replaces it). Subtask ids may hold dots."""

TASK_CONTROL = "aether.control.task"
"""Core NATS (not persisted): broadcasts such as cancellation to every running worker."""

AGENT_EVENTS_PREFIX = "aether.agent"
"""`aether.agent.<started|stopped|failed>`: agent lifecycle announcements (persisted)."""

AGENT_CONTROL_PREFIX = "aether.control.agent"
"""`aether.control.agent.<agent id>`: core NATS request to one agent (stop and hand back work)."""

MANAGER_CONTROL = "aether.control.manager"
"""Core NATS request to the container-manager (stop an agent that does not answer itself)."""


STEP_PREFIX = "aether.step"
"""`aether.step.<task id>.<subtask id>`: an expert's tool calls and checks, one message each
(JetStream; the step log of a subtask, read back by the gateway)."""


def step(task_id: str, subtask_id: str) -> str:
    return f"{STEP_PREFIX}.{task_id}.{subtask_id}"


def subtask_ready(agent_type: str) -> str:
    return f"{SUBTASK_READY_PREFIX}.{agent_type}"


def agent_event(kind: str) -> str:
    return f"{AGENT_EVENTS_PREFIX}.{kind}"


def deadline(task_id: str) -> str:
    return f"{DEADLINE_PREFIX}.{task_id}"


def approval_deadline(task_id: str) -> str:
    return f"{APPROVAL_DEADLINE_PREFIX}.{task_id}"


def question_deadline(task_id: str, subtask_id: str) -> str:
    return f"{QUESTION_DEADLINE_PREFIX}.{task_id}.{subtask_id}"


def agent_control(agent_id: str) -> str:
    return f"{AGENT_CONTROL_PREFIX}.{agent_id}"


SUBTASK_READY_ANY = f"{SUBTASK_READY_PREFIX}.*"


def inbox_prefix(user: str) -> str:
    """Where a NATS user receives the replies to its requests (JetStream's too): `_INBOX_<user>`,
    the only inbox it may subscribe to (aether_contracts.permissions)."""
    return f"_INBOX_{user}"


_PER_ID_PREFIXES = (DEADLINE_PREFIX, AGENT_CONTROL_PREFIX)


def metric_label(subject: str) -> str:
    """A subject as a metric label or span name: the subjects that carry an id (a task's
    deadline, one agent's control, a reply inbox) become their pattern, so neither the number
    of series nor what a scrape shows grows with, or names, tasks and agents."""
    for prefix in _PER_ID_PREFIXES:
        if subject.startswith(prefix + "."):
            return prefix + ".*"
    if subject.startswith("_INBOX"):  # `_INBOX.` and every user's `_INBOX_<user>.`
        return "_INBOX.*"
    return subject
