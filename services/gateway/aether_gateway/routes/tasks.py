from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response

from aether_contracts import subjects
from aether_contracts.events import TaskCreated
from aether_contracts.state import TaskState, TaskStatus
from aether_core.ids import stable_task_id, uuid7
from aether_core.store import TaskExists

from ..deps import GatewayDep
from ..schemas import ErrorBody, TaskBody, TaskSubmission, TaskSummary, task_body

router = APIRouter(prefix="/api/orchestrate", tags=["tasks"])

NOT_FOUND = {404: {"model": ErrorBody, "description": "No task with this id"}}


@router.post(
    "/task",
    status_code=202,
    response_model=TaskBody,
    responses={422: {"model": ErrorBody, "description": "Invalid submission"}},
    summary="Submit a coding task for orchestration",
)
async def submit_task(
    submission: TaskSubmission,
    gw: GatewayDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(description="Resubmitting with the same key returns the same task.", max_length=200),
    ] = None,
) -> TaskBody:
    description = submission.description.strip()
    if not description:
        raise HTTPException(422, "description must not be empty")
    limit = gw.settings.max_description_chars
    if len(description) > limit:
        raise HTTPException(
            422, f"description has {len(description)} characters; at most {limit} are allowed"
        )
    master_id = submission.master_deployment_id or gw.settings.default_master
    if gw.registry.master(master_id) is None:
        known = ", ".join(sorted(gw.registry.masters))
        raise HTTPException(422, f"unknown master_deployment_id '{master_id}'; known: {known}")

    task_id = stable_task_id("default", idempotency_key) if idempotency_key else uuid7()
    if idempotency_key and (found := await gw.store.get(task_id)) is not None:
        return task_body(*found)

    state = TaskState(id=task_id, description=description, master_id=master_id)
    state.record("task.created", f"Task created for master {master_id}")
    # Published first: if we die before writing the state, the planner writes it from the event.
    await gw.runtime.publish(
        TaskCreated(
            task_id=task_id,
            description=description,
            master_id=master_id,
            created_at=state.created_at,
        ),
        subjects.TASK_CREATED,
    )
    try:
        revision = await gw.store.create(state)
    except TaskExists:
        found = await gw.store.get(task_id)
        assert found is not None
        state, revision = found
    gw.index.upsert(state, revision)
    response.headers["Location"] = f"/api/orchestrate/task/{task_id}"
    return task_body(state, revision)


@router.get("/task/{task_id}", response_model=TaskBody, responses=NOT_FOUND, summary="Get a task")
async def get_task(task_id: str, gw: GatewayDep) -> TaskBody:
    found = await gw.store.get(task_id) if _plausible_id(task_id) else None
    if found is None:
        raise HTTPException(404, f"no task with id '{task_id}'")
    return task_body(*found)


@router.get(
    "/tasks",
    response_model=list[TaskSummary],
    summary="List tasks, newest first",
    description="Paginated with `limit` and `offset`; the total is in the `X-Total-Count` header.",
)
async def list_tasks(
    gw: GatewayDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: TaskStatus | None = None,
) -> list[TaskSummary]:
    items, total = gw.index.page(limit=limit, offset=offset, status=status)
    response.headers["X-Total-Count"] = str(total)
    return items


def _plausible_id(task_id: str) -> bool:
    # KV keys allow a limited alphabet; anything else cannot be a task and must not reach NATS.
    return 0 < len(task_id) <= 128 and all(c.isalnum() or c in "-_" for c in task_id)
