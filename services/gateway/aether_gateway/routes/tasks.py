from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Query, Response
from fastapi.responses import JSONResponse

from aether_contracts import subjects
from aether_contracts.events import (
    PlanReady,
    ReplanRequested,
    TaskControl,
    TaskCreated,
    TaskFinished,
)
from aether_contracts.state import Approval, EventKind, TaskState, TaskStatus
from aether_core import telemetry
from aether_core.control import (
    ControlError,
    prepare_replan_from_scratch,
    prepare_retry,
    select_retry,
    stop_task,
)
from aether_core.ids import stable_task_id, uuid7
from aether_core.store import TaskExists

from .. import control
from ..auth import Principal, visible
from ..control import arm_deadline, plausible_task_id
from ..deps import Gateway, GatewayDep, PrincipalDep
from ..metrics import TASKS_SUBMITTED
from ..schemas import (
    AnswerRequest,
    ApproveRequest,
    ErrorBody,
    RejectRequest,
    RetryRequest,
    TaskBody,
    TaskSubmission,
    TaskSummary,
    task_body,
)

router = APIRouter(prefix="/api/orchestrate", tags=["tasks"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No task with this id"}}
RETRY_AFTER_S = 5


@router.post(
    "/task",
    status_code=202,
    response_model=TaskBody,
    responses={
        401: {"model": ErrorBody, "description": "Missing or invalid API key"},
        422: {"model": ErrorBody, "description": "Invalid submission"},
        429: {"model": ErrorBody, "description": "Too many tasks in progress; see Retry-After"},
    },
    summary="Submit a coding task for orchestration",
)
async def submit_task(
    submission: TaskSubmission,
    gw: GatewayDep,
    principal: PrincipalDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(description="Resubmitting with the same key returns the same task.", max_length=200),
    ] = None,
) -> TaskBody:
    state, revision, created = await create_task(
        gw, principal, submission.description, submission.master_deployment_id,
        idempotency_key=idempotency_key, require_plan_approval=submission.require_plan_approval,
    )
    if created:
        response.headers["Location"] = f"/api/orchestrate/task/{state.id}"
    return task_body(state, revision)


async def create_task(
    gw: Gateway,
    principal: Principal,
    description: str,
    master_id: str | None = None,
    *,
    idempotency_key: str | None = None,
    origin: dict | None = None,
    require_plan_approval: bool = False,
) -> tuple[TaskState, int, bool]:
    """Submit a task as `POST /task` does (the A2A agent too): the task, its revision, and
    whether it is new (False: the idempotency key named an existing one). `origin`: recorded
    with the creation event (how the task came in). HTTPException when it is refused."""
    description = description.strip()
    if not description:
        raise HTTPException(422, "description must not be empty")
    limit = gw.settings.max_description_chars
    if len(description) > limit:
        raise HTTPException(
            422, f"description has {len(description)} characters; at most {limit} are allowed"
        )
    master_id = master_id or gw.settings.default_master
    if gw.registry.master(master_id) is None:
        known = ", ".join(sorted(gw.registry.masters))
        raise HTTPException(422, f"unknown master_deployment_id '{master_id}'; known: {known}")
    approval = gw.settings.plan_approval
    if approval == "never" and require_plan_approval:
        # Running a plan its submitter wanted to approve first would spend what they meant to check.
        raise HTTPException(422, "require_plan_approval: this server does not hold plans for approval (AETHER_PLAN_APPROVAL=never)")
    approval_timeout = gw.settings.approval_timeout_s if approval == "always" or require_plan_approval else None

    task_id = stable_task_id(principal.tenant, idempotency_key) if idempotency_key else uuid7()
    telemetry.annotate({telemetry.TASK_ID: task_id})
    if idempotency_key and (found := await gw.store.get(task_id)) is not None:
        if not visible(principal, found[0].tenant):
            # Cannot happen by chance (the id is a hash of the tenant and the key): refuse it.
            raise HTTPException(409, "this Idempotency-Key names a task you cannot see: use another key")
        return *found, False
    await _admit(gw, principal, task_id)

    # This request's trace is the task's: every service's spans hang under the task's span,
    # made here (exported when the task ends) and carried by every message of the task.
    trace_id = telemetry.current_trace_id()
    workflow = telemetry.open_workflow()
    state = TaskState(
        trace_parent=telemetry.current_traceparent(),
        workflow_span=workflow,
        id=task_id,
        description=description,
        master_id=master_id,
        tenant=principal.tenant,
        timeout_s=gw.settings.task_timeout_s,
        trace_id=trace_id,
        approval=Approval(timeout_s=approval_timeout) if approval_timeout else None,
        question_timeout_s=gw.settings.question_timeout_s,
    )
    state.record(
        EventKind.TASK_CREATED,
        f"Task created for master {master_id}" + ("; its plan waits for approval" if approval_timeout else ""),
        data=origin,
    )
    with telemetry.within(workflow):
        # Published first: if we die before writing the state, the planner writes it from the event.
        await gw.runtime.publish(
            TaskCreated(
                task_id=task_id,
                description=description,
                master_id=master_id,
                tenant=principal.tenant,
                trace_id=trace_id,
                workflow_span=workflow,
                created_at=state.created_at,
                approval_timeout_s=approval_timeout,
                question_timeout_s=state.question_timeout_s,
            ),
            subjects.TASK_CREATED,
        )
        TASKS_SUBMITTED.inc()
        try:
            revision = await gw.store.create(state)
        except TaskExists:
            found = await gw.store.get(task_id)
            assert found is not None
            state, revision = found
        await arm_deadline(gw, state)
    gw.index.upsert(state, revision)
    return state, revision, True


@router.get("/task/{task_id}", response_model=TaskBody, responses=NOT_FOUND, summary="Get a task")
async def get_task(task_id: str, gw: GatewayDep, principal: PrincipalDep) -> TaskBody:
    found = await gw.store.get(task_id) if plausible_task_id(task_id) else None
    if found is None or not visible(principal, found[0].tenant):
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
    principal: PrincipalDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: TaskStatus | None = None,
) -> list[TaskSummary]:
    items, total = gw.index.page(limit=limit, offset=offset, status=status, tenant=principal.tenant)
    response.headers["X-Total-Count"] = str(total)
    return items


CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No task with this id"},
    409: {"model": ErrorBody, "description": "The task's state does not allow this"},
    422: {"model": ErrorBody, "description": "Invalid request"},
}
RETRY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **CONTROL_RESPONSES,
    429: {"model": ErrorBody, "description": "Too many tasks in progress; see Retry-After"},
}


@router.post(
    "/task/{task_id}/cancel",
    response_model=TaskBody,
    responses=CONTROL_RESPONSES,
    summary="Cancel a task: pending subtasks never start, running ones are stopped",
)
async def cancel_task(task_id: str, gw: GatewayDep, principal: PrincipalDep) -> TaskBody:
    state, revision = await cancel(gw, principal, task_id)
    return task_body(state, revision)


async def cancel(gw: Gateway, principal: Principal, task_id: str) -> tuple[TaskState, int]:
    """Cancel as `POST /task/{id}/cancel` does (the A2A agent too); HTTPException 404 / 409."""
    reason = "cancelled through the API"
    mutation = await _control(gw, principal, task_id, lambda s: stop_task(s, TaskStatus.CANCELLED, reason))
    state = mutation.state
    with telemetry.resume(state.trace_parent, "cancel", {telemetry.TASK_ID: task_id}):
        await gw.runtime.broker.publish(
            TaskControl(task_id=task_id, action="cancel", reason=reason), subjects.TASK_CONTROL
        )
        await gw.runtime.publish(
            TaskFinished(task_id=task_id, status="cancelled", round=state.round),
            subjects.TASK_FINISHED,
        )
    return state, mutation.revision


@router.post(
    "/task/{task_id}/retry",
    status_code=202,
    response_model=TaskBody,
    responses=RETRY_RESPONSES,
    summary="Retry a task's failed subtasks (and the dependents that never ran), or replan them",
)
async def retry_task(
    task_id: str,
    gw: GatewayDep,
    principal: PrincipalDep,
    request: Annotated[RetryRequest | None, Body()] = None,
) -> TaskBody:
    request = request or RetryRequest()
    reserved: list[str | None] = [None]

    def change(state: TaskState) -> tuple[str, list[str]]:
        if not state.subtasks:
            prepare_replan_from_scratch(state)
            action, selected = "plan", []
        else:
            chosen = select_retry(state, request.subtask_ids)
            prepare_retry(state, chosen, replan=request.replan)
            action, selected = ("replan" if request.replan else "run"), [s.id for s in chosen]
        # The new round's span, under the `retry` span to come (made below, with this id).
        reserved[0] = telemetry.reserve(state.trace_parent)
        state.workflow_span = telemetry.open_workflow(reserved[0])
        return action, selected

    found = await gw.store.get(task_id) if plausible_task_id(task_id) else None
    if found and found[0].status.terminal and visible(principal, found[0].tenant):
        # A retried task is in progress again, in its next round: it counts like a new one.
        # (One in progress is counted already, and its retry is refused below.)
        next_round = found[0].round + 1
        await _admit(gw, principal, task_id, next_round)
        try:
            mutation = await _control(gw, principal, task_id, change)
        except HTTPException:
            assert gw.quota is not None
            await gw.quota.release(principal.tenant, task_id, next_round)
            raise
    else:
        mutation = await _control(gw, principal, task_id, change)
    state = mutation.state
    action, selected = mutation.value
    attributes = {telemetry.TASK_ID: task_id, "aether.round": state.round, "aether.retry": action}
    # The new round's work continues the task's trace (linked to this request's).
    with telemetry.resume(state.trace_parent, "retry", attributes, reserved=reserved[0]), telemetry.within(state.workflow_span):
        if action == "plan":
            await gw.runtime.publish(
                TaskCreated(
                    task_id=task_id,
                    description=state.description,
                    master_id=state.master_id,
                    tenant=state.tenant,
                    trace_id=state.trace_id,
                    workflow_span=state.workflow_span,
                    created_at=state.created_at,
                    round=state.round,
                    approval_timeout_s=state.approval.timeout_s if state.approval else None,
                    question_timeout_s=state.question_timeout_s,
                ),
                subjects.TASK_CREATED,
            )
        elif action == "replan":
            await gw.runtime.publish(
                ReplanRequested(task_id=task_id, subtask_ids=selected, round=state.round),
                subjects.REPLAN_REQUESTED,
            )
        else:
            await gw.runtime.publish(PlanReady(task_id=task_id, round=state.round), subjects.PLAN_READY)
        await arm_deadline(gw, state)
    return task_body(state, mutation.revision)


async def _admit(gw: Gateway, principal: Principal, task_id: str, round: int = 1) -> None:
    """Returns when the tenant may have this task in progress, else raises the 429 to answer."""
    assert gw.quota is not None
    active = await gw.quota.admit(principal.tenant, task_id, round)
    if active is not None:
        raise HTTPException(
            429,
            f"{active} tasks in progress; at most {gw.quota.limit} may run at once: retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


async def _control(gw: Gateway, principal: Principal, task_id: str, change):
    try:
        return await control.change_task(gw, principal, task_id, change)
    except ControlError as refused:
        raise HTTPException(refused.status, refused.message) from None


class InvalidPlanBody(ErrorBody):
    problems: list[str] = []
    """Every reason an edited plan cannot run (empty for a request that is invalid otherwise)."""


APPROVAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No task with this id"},
    409: {"model": ErrorBody, "description": "The task is not awaiting approval"},
    422: {"model": InvalidPlanBody, "description": "Invalid request, or an edited plan that cannot run: `problems` names every reason"},
}


@router.post(
    "/task/{task_id}/approve",
    response_model=TaskBody,
    responses=APPROVAL_RESPONSES,
    summary="Approve the plan of a task awaiting approval, as it is or edited: it runs",
)
async def approve_task(
    task_id: str, gw: GatewayDep, principal: PrincipalDep, request: Annotated[ApproveRequest | None, Body()] = None
) -> TaskBody | JSONResponse:
    try:
        mutation = await control.approve(gw, principal, task_id, (request or ApproveRequest()).plan)
    except control.InvalidPlan as invalid:
        return JSONResponse({"detail": invalid.message, "problems": invalid.problems}, status_code=422)
    except ControlError as refused:
        raise HTTPException(refused.status, refused.message) from None
    return task_body(mutation.state, mutation.revision)


@router.post(
    "/task/{task_id}/reject",
    response_model=TaskBody,
    responses={**APPROVAL_RESPONSES, 422: {"model": ErrorBody, "description": "Invalid request: a reason is required"}},
    summary="Reject the plan of a task awaiting approval: the task ends cancelled, nothing ran",
)
async def reject_task(task_id: str, request: RejectRequest, gw: GatewayDep, principal: PrincipalDep) -> TaskBody:
    try:
        mutation = await control.reject(gw, principal, task_id, request.reason)
    except ControlError as refused:
        raise HTTPException(refused.status, refused.message) from None
    return task_body(mutation.state, mutation.revision)


@router.post(
    "/task/{task_id}/subtasks/{subtask_id}/answer",
    response_model=TaskBody,
    responses={
        404: {"model": ErrorBody, "description": "No such task or subtask"},
        409: {"model": ErrorBody, "description": "The subtask has no open question"},
        422: {"model": ErrorBody, "description": "Invalid request"},
    },
    summary="Answer a subtask's open question: its expert goes on with the answer",
)
async def answer_question(
    task_id: str, subtask_id: str, request: AnswerRequest, gw: GatewayDep, principal: PrincipalDep
) -> TaskBody:
    try:
        mutation = await control.answer(gw, principal, task_id, subtask_id, request.answer)
    except ControlError as refused:
        raise HTTPException(refused.status, refused.message) from None
    return task_body(mutation.state, mutation.revision)
