"""Looking at the agent pool from outside: the REST API, the events on NATS, the processes."""

from __future__ import annotations

import httpx
import nats

from aether_contracts.events import AgentEvent
from tests.support.services import eventually


async def pool(client: httpx.AsyncClient) -> list[dict]:
    response = await client.get("/api/agents")
    assert response.status_code == 200, response.text
    return response.json()


async def experts(client: httpx.AsyncClient, agent_type: str | None = None, *, alive: bool = True) -> list[dict]:
    return [
        a
        for a in await pool(client)
        if a["role"] == "expert"
        and (agent_type is None or a["agent_type"] == agent_type)
        and (not alive or a["alive"])
    ]


async def wait_for(check, timeout: float = 60, interval: float = 0.2, what: str = "condition"):
    """`eventually` at the pool's pace (its interval is 0.2 s or more)."""
    return await eventually(check, timeout=timeout, interval=interval, what=what)


async def agent_events(nats_url: str, settle_s: float = 2.0) -> list[AgentEvent]:
    """Every agent event persisted on the stream so far."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    events: list[AgentEvent] = []
    sub = await js.subscribe("aether.agent.>", ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=settle_s)
            except nats.errors.TimeoutError:
                break
            events.append(AgentEvent.model_validate_json(msg.data))
    finally:
        await sub.unsubscribe()
        await nc.close()
    return events
