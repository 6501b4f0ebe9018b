"""A task's workspace over REST: its files, one file, and its repository (a git bundle or a
`.tar.gz`), read from the Object Store by the names the task state lists. Nothing here touches a
filesystem, and only listed files can be read, so no request path can reach anything else."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from aether_contracts.state import TaskState
from aether_contracts.workspace import (
    SYNTHESIS,
    PathConflict,
    RefusedFile,
    RepositoryInfo,
    WorkspaceFile,
)
from aether_core.files import UnsafePath, check_path, shown
from aether_core.workspace import final_files
from aether_core.workspace_store import ObjectCorrupt, ObjectMissing, WorkspaceStore

from ..auth import Principal, visible
from ..deps import Gateway, GatewayDep, PrincipalDep
from ..schemas import ErrorBody

router = APIRouter(prefix="/api/orchestrate", tags=["workspace"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid API key (or, for a download, no valid signed link)"},
    404: {"model": ErrorBody, "description": "No such task, file (or no valid path) or repository"},
}
NOT_READY: dict[int | str, dict[str, Any]] = {409: {"model": ErrorBody, "description": "The task has not completed yet"}}


# A signed link's query, as `GET .../files` hands it out instead of a key (checked by
# deps.authenticate, before the route runs; declared here for the API's documentation).
Expires = Annotated[str | None, Query(pattern=r"^[0-9]{1,12}$", description="A signed link's expiry (unix time)")]
Signature = Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$", description="A signed link's signature")]


class FileBody(BaseModel):
    path: str
    size: int
    sha256: str
    written_by: str
    """A subtask id, or `synthesis`."""
    agent_type: str | None = None


class RepositoryBody(RepositoryInfo):
    bundle_url: str
    """A link that downloads without a key for a while (`links_expire_in_s`), then answers 401."""
    archive_url: str
    links_expire_in_s: float | None = None
    """How long the links work; None when the gateway takes no keys."""


class WorkspaceBody(BaseModel):
    task_id: str
    status: str
    files: list[FileBody]
    """The files of the repository's last commit (or, before it exists, of the subtasks so far)."""
    versions: list[FileBody]
    """Every file every subtask wrote, in commit order (a conflict has several versions)."""
    conflicts: list[PathConflict]
    refused: list[RefusedFile]
    repository: RepositoryBody | None = None


def _plausible(task_id: str) -> bool:
    # KV keys are ASCII: anything else cannot be a task and must not reach NATS.
    return 0 < len(task_id) <= 128 and all(c.isascii() and (c.isalnum() or c in "-_") for c in task_id)


async def _task(gw: GatewayDep, principal: Principal, task_id: str, download: str | None = None) -> TaskState:
    """The task, if this caller may see it (another tenant's task is a plain 404); a signed link
    opens only its own download."""
    found = await gw.store.get(task_id) if _plausible(task_id) else None
    allowed = found is not None and (
        visible(principal, found[0].tenant) or (download is not None and principal.link == (task_id, download))
    )
    if not allowed:
        raise HTTPException(404, f"no task with id '{task_id}'")
    assert found is not None
    return found[0]


def _store(gw: GatewayDep) -> WorkspaceStore:
    assert gw.workspace is not None
    return gw.workspace


@router.get(
    "/task/{task_id}/files",
    response_model=WorkspaceBody,
    responses=ERRORS,
    summary="List a task's files, conflicts, refused files and repository",
)
async def list_files(task_id: str, gw: GatewayDep, principal: PrincipalDep) -> WorkspaceBody:
    state = await _task(gw, principal, task_id)
    types = {s.id: s.agent_type for s in state.subtasks}

    def body(f) -> FileBody:
        return FileBody(**f.model_dump(exclude={"object"}), agent_type=types.get(f.written_by))

    versions = [f for s in state.subtasks for f in s.files] + list(state.synthesis_files)
    refused = [r for s in state.subtasks for r in s.refused_files]
    repository = None
    if state.repository is not None:
        base = f"/api/orchestrate/task/{state.id}"
        bundle, archive = f"{base}/repository.bundle", f"{base}/repository.tar.gz"
        signer = gw.links if gw.keys.enabled else None
        repository = RepositoryBody(
            **state.repository.model_dump(),
            bundle_url=signer.sign(bundle, state.id, "bundle") if signer else bundle,
            archive_url=signer.sign(archive, state.id, "archive") if signer else archive,
            links_expire_in_s=signer.lifetime_s if signer else None,
        )
    return WorkspaceBody(
        task_id=state.id,
        status=state.status.value,
        files=[body(f) for f in final_files(state).values()],
        versions=[body(f) for f in versions],
        conflicts=state.conflicts,
        refused=refused,
        repository=repository,
    )


@router.get(
    "/task/{task_id}/files/{path:path}",
    responses={**ERRORS, 200: {"content": {"text/plain": {}, "application/octet-stream": {}}}},
    summary="Read one file of a task's workspace",
    description=(
        "The file as the repository's last commit has it, or with `written_by` the version a "
        "given subtask (or `synthesis`) wrote. Served as text/plain or octet-stream, never as "
        "HTML: workspace files are LLM output."
    ),
)
async def read_file(
    task_id: str,
    path: str,
    gw: GatewayDep,
    principal: PrincipalDep,
    written_by: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    file, content = await stored_file(gw, principal, task_id, path, written_by)
    try:
        content.decode("utf-8")
        media = "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        media = "application/octet-stream"
    name = file.path.rsplit("/", 1)[-1].replace('"', "")
    return Response(
        content,
        media_type=media,
        headers={
            "ETag": f'"{file.sha256}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f"inline; filename=\"{name.encode('ascii', 'replace').decode()}\"",
            "X-Aether-Written-By": file.written_by,
        },
    )


async def stored_file(
    gw: Gateway, principal: Principal, task_id: str, path: str, written_by: str | None = None
) -> tuple[WorkspaceFile, bytes]:
    """One file of a task's workspace (the last commit's, or the version `written_by` wrote) and
    its content; 404 as the route answers it. Shared by the route and the MCP tool."""
    state = await _task(gw, principal, task_id)
    try:
        path = check_path(path)
    except UnsafePath as exc:
        # No file can have such a path: it is not in the workspace (the reason says why).
        raise HTTPException(404, f"task '{task_id}' has no file '{shown(path)}': the path {exc}") from None
    if written_by is None:
        file = final_files(state).get(path)
    else:
        source = state.synthesis_files if written_by == SYNTHESIS else next(
            (s.files for s in state.subtasks if s.id == written_by), None
        )
        if source is None:
            raise HTTPException(404, f"task '{task_id}' has no subtask '{written_by}'")
        file = next((f for f in source if f.path == path), None)
    if file is None:
        who = f" written by {written_by}" if written_by else ""
        raise HTTPException(404, f"task '{task_id}' has no file '{path}'{who}")
    try:
        content = await _store(gw).read(file.object)
    except (ObjectMissing, ObjectCorrupt) as exc:
        raise HTTPException(500, f"the stored content of '{path}' is unreadable: {exc}") from None
    return file, content


async def _download(gw: GatewayDep, principal: Principal, task_id: str, kind: str) -> StreamingResponse:
    state = await _task(gw, principal, task_id, kind)
    repository = state.repository
    if not state.status.terminal:
        # A retried task keeps its previous repository until the new one is assembled.
        raise HTTPException(
            409, f"task '{task_id}' is {state.status.value}: its repository is assembled when it completes"
        )
    if repository is None:
        raise HTTPException(404, f"task '{task_id}' has no repository: it ended {state.status.value}")
    if repository.error:
        raise HTTPException(500, f"the repository of task '{task_id}' could not be assembled: {repository.error}")
    name = repository.bundle_object if kind == "bundle" else repository.archive_object
    store = _store(gw)
    info = await store.info(name)
    if info is None:
        raise HTTPException(500, f"the repository of task '{task_id}' is missing from the workspace store")
    filename = f"aether-{task_id}.bundle" if kind == "bundle" else f"aether-{task_id}.tar.gz"
    return StreamingResponse(
        store.stream(name, info),
        media_type="application/x-git-bundle" if kind == "bundle" else "application/gzip",
        headers={
            "Content-Length": str(info.size),
            "Content-Disposition": f'attachment; filename="{filename}"',
            "ETag": f'"{repository.head}-{kind}"',
            # The signed link is in the URL: neither cache it nor hand it on.
            "Cache-Control": "private, no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.get(
    "/task/{task_id}/repository.bundle",
    responses={**ERRORS, **NOT_READY},
    response_class=StreamingResponse,
    summary="Download the task's repository as a git bundle (`git clone aether-<id>.bundle`)",
)
async def download_bundle(
    task_id: str, gw: GatewayDep, principal: PrincipalDep, expires: Expires = None, signature: Signature = None
) -> StreamingResponse:
    return await _download(gw, principal, task_id, "bundle")


@router.get(
    "/task/{task_id}/repository.tar.gz",
    responses={**ERRORS, **NOT_READY},
    response_class=StreamingResponse,
    summary="Download the files of the task's repository as a .tar.gz (like `git archive`)",
)
async def download_archive(
    task_id: str, gw: GatewayDep, principal: PrincipalDep, expires: Expires = None, signature: Signature = None
) -> StreamingResponse:
    return await _download(gw, principal, task_id, "archive")
