"""An expert's steps: every tool call and check of a subtask, read back from the work stream
(`aether.step.<task>.<subtask>`), where agents store them; the task state keeps only counts."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, HTTPException
from nats.js.errors import NotFoundError

from aether_contracts import subjects, topology
from aether_contracts.events import ToolStep

from ..auth import visible
from ..deps import GatewayDep, PrincipalDep
from ..schemas import ErrorBody
from .tasks import plausible_task_id

router = APIRouter(prefix="/api/orchestrate", tags=["tasks"])

MAX_STEPS = 2000
"""Steps one answer returns (a subtask's runs together; the step bound keeps one run far below)."""


@router.get(
    "/task/{task_id}/subtasks/{subtask_id}/steps",
    response_model=list[ToolStep],
    responses={404: {"model": ErrorBody, "description": "No such task or subtask"}},
    summary="An expert's tool calls and checks for one subtask, oldest first",
    description=(
        "Every run of the subtask (`attempt`), each tool call (`kind: tool`) and each of its checks "
        "(`kind: check`) with its arguments, outcome and (bounded) output. The same steps arrive "
        "live as `task.step` messages on the task's stream."
    ),
)
async def list_steps(task_id: str, subtask_id: str, gw: GatewayDep, principal: PrincipalDep) -> list[ToolStep]:
    found = await gw.store.get(task_id) if plausible_task_id(task_id) else None
    if found is None or not visible(principal, found[0].tenant):
        raise HTTPException(404, f"no task with id '{task_id}'")
    if found[0].find_subtask(subtask_id) is None:
        raise HTTPException(404, f"task '{task_id}' has no subtask '{subtask_id}'")
    js = gw.runtime.js
    assert js is not None
    subject = subjects.step(task_id, subtask_id)
    steps: list[ToolStep] = []
    seq = 1
    while len(steps) < MAX_STEPS:
        try:
            message = await js.get_msg(topology.STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            break
        with contextlib.suppress(ValueError):
            steps.append(ToolStep.model_validate_json(message.data or b""))
        seq = (message.seq or seq) + 1
    return steps
