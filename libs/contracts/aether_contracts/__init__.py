"""Aether's contracts: subjects, streams, consumers, buckets, events and the shape of task state."""

from . import events, subjects, topology
from .state import (
    Subtask,
    SubtaskStatus,
    TaskEvent,
    TaskState,
    TaskStatus,
    Usage,
    utcnow,
)

__all__ = [
    "Subtask",
    "SubtaskStatus",
    "TaskEvent",
    "TaskState",
    "TaskStatus",
    "Usage",
    "events",
    "subjects",
    "topology",
    "utcnow",
]
