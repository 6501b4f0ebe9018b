"""The gateway's REST API and its task stream (Server-Sent Events), resumed after a dropped connection."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx


class GatewayError(Exception):
    """The gateway answered with an error (4xx or 5xx); `detail` is its message, `problems` every
    reason it gave for refusing an edited plan."""

    def __init__(self, status: int, detail: str, problems: list[str] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.problems = problems or []


class Unreachable(Exception):
    def __init__(self, url: str, reason: object) -> None:
        super().__init__(f"cannot reach the Aether gateway at {url} ({reason}); set AETHER_URL or --url")


@dataclass
class Message:
    type: str
    id: str | None
    data: Any


def parse_sse(lines: Iterable[str]) -> Iterator[Message]:
    event, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Message(event, event_id, json.loads("\n".join(data)))
            event, event_id, data = "message", None, []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else (response.text.strip()[:300] or response.reason_phrase)


def _problems(response: httpx.Response) -> list[str]:
    try:
        problems = response.json().get("problems")
    except (ValueError, AttributeError):
        return []
    return [str(p) for p in problems] if isinstance(problems, list) else []


class Gateway:
    def __init__(self, url: str, *, key: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(self.url, exc) from exc
        if response.status_code >= 400:
            raise GatewayError(response.status_code, _detail(response), _problems(response))
        return response

    def submit(self, description: str, master: str | None = None, *, require_plan_approval: bool = False) -> dict:
        body: dict[str, Any] = {"description": description}
        if master:
            body["master_deployment_id"] = master
        if require_plan_approval:
            body["require_plan_approval"] = True
        return self._call("POST", "/api/orchestrate/task", json=body).json()

    def approve(self, task_id: str, plan: dict[str, Any] | None = None) -> dict:
        """Run the plan of a task awaiting approval (Jason's, or `plan` instead)."""
        return self._call("POST", f"/api/orchestrate/task/{task_id}/approve", json={"plan": plan} if plan is not None else {}).json()

    def reject(self, task_id: str, reason: str) -> dict:
        return self._call("POST", f"/api/orchestrate/task/{task_id}/reject", json={"reason": reason}).json()

    def answer(self, task_id: str, subtask_id: str, answer: str) -> dict:
        return self._call("POST", f"/api/orchestrate/task/{task_id}/subtasks/{subtask_id}/answer", json={"answer": answer}).json()

    def task(self, task_id: str) -> dict:
        return self._call("GET", f"/api/orchestrate/task/{task_id}").json()

    def steps(self, task_id: str, subtask_id: str) -> list[dict]:
        """Every tool call and check of one subtask, oldest first."""
        return self._call("GET", f"/api/orchestrate/task/{task_id}/subtasks/{subtask_id}/steps").json()

    def tasks(self, *, status: str | None = None, limit: int = 20) -> tuple[list[dict], int]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        response = self._call("GET", "/api/orchestrate/tasks", params=params)
        return response.json(), int(response.headers.get("x-total-count", "0"))

    def templates(self) -> list[dict]:
        return self._call("GET", "/api/orchestrate/agents").json()

    def agents(self) -> list[dict] | None:
        """The live agent pool; None when this gateway has no agent pool endpoint."""
        try:
            return self._call("GET", "/api/agents").json()
        except GatewayError as exc:
            if exc.status in (404, 405):
                return None
            raise

    def follow(
        self,
        task_id: str,
        *,
        after: int = 0,
        retries: int = 8,
        on_retry: Callable[[int, str], None] | None = None,
    ) -> Generator[Message, None, None]:
        """The task's stream until `task.end`; a dropped connection resumes after the last event."""
        position = after
        failures = 0
        while True:
            headers = {"Last-Event-ID": str(position)} if position else {}
            try:
                # The server sends a keep-alive comment every 15 s, so a minute of silence is a
                # dead connection.
                with self.http.stream(
                    "GET",
                    f"/api/orchestrate/task/{task_id}/stream",
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=60.0),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise GatewayError(response.status_code, _detail(response))
                    for message in parse_sse(response.iter_lines()):
                        failures = 0
                        if message.id is not None:
                            position = int(message.id)
                        yield message
                        if message.type == "task.end":
                            return
                reason = "the stream ended before the task did"
            except httpx.TransportError as exc:
                reason = str(exc) or type(exc).__name__
            failures += 1
            if failures > retries:
                raise Unreachable(self.url, reason)
            if on_retry is not None:
                on_retry(failures, reason)
            time.sleep(min(5.0, 0.25 * 2**failures))
