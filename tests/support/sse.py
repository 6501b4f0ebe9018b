"""A small Server-Sent Events reader for tests: the wire format as the HTML standard defines it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Message:
    event: str
    id: str | None
    """The event's own `id:` field (None when it has none)."""
    data: Any

    @property
    def type(self) -> str:
        return self.event


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    event, event_id, data = "message", None, []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Message(event, event_id, json.loads("\n".join(data)))
            event, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
