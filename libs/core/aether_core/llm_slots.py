"""A limit on the LLM calls in flight to one endpoint, shared by every process of a deployment.

A local llama.cpp or Ollama serves one request at a time: every other request waits in its socket
and times out there, while the client counts the wait as the model's. With
`AETHER_LLM_MAX_CONCURRENCY=N`, a call first takes one of N slots, kept under one key (the
endpoint's digest) of the `llm_slots` KV bucket and changed only by compare-and-set, so the
planner, the synthesizer and every agent together keep at most N requests at the server; the
others wait in Aether, where a cancel or a deadline still reaches them.

A slot is a lease: its holder renews it while the call runs, so the slot of a process that died
mid-call frees itself after `LEASE_S`. Waiting is a poll of the key (a KV get costs about 0.2 ms);
slots are not handed out in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from aether_contracts.topology import LLM_SLOTS_BUCKET

from .kv import create_key

log = logging.getLogger("aether.llm")

LEASE_S = 30.0
POLL_S = (0.01, 0.1)
"""The wait between two looks at a full endpoint: from the first value, growing to the second."""


def endpoint_key(base_url: str | None) -> str:
    return "endpoint." + hashlib.sha256((base_url or "openai").encode()).hexdigest()[:32]


class EndpointSlots:
    def __init__(self, kv: KeyValue, base_url: str | None, limit: int, *, lease_s: float = LEASE_S) -> None:
        if limit < 1:
            raise ValueError("a concurrency limit is at least 1")
        self.kv = kv
        self.key = endpoint_key(base_url)
        self.limit = limit
        self.lease_s = lease_s

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        holder = uuid.uuid4().hex
        await self._acquire(holder)
        renew = asyncio.create_task(self._renew(holder))
        try:
            yield
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            # Freed even when the call was cancelled: shielded, so the cancel does not stop it.
            await asyncio.shield(self._change(holder, None))

    async def _acquire(self, holder: str) -> None:
        wait = POLL_S[0]
        while not await self._change(holder, time.time() + self.lease_s, only_if_free=True):
            await asyncio.sleep(random.uniform(wait / 2, wait))
            wait = min(POLL_S[1], wait * 1.5)

    async def _renew(self, holder: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._change(holder, time.time() + self.lease_s)
            except Exception as exc:  # NATS away: the lease may lapse; the call goes on
                log.warning("could not renew an LLM slot: %r", exc)

    async def _change(self, holder: str, expires: float | None, *, only_if_free: bool = False) -> bool:
        """Set (or with None, drop) this holder's lease; False when `only_if_free` and full."""
        while True:
            try:
                entry = await self.kv.get(self.key)
                revision, leases = entry.revision, json.loads(entry.value or b"{}")
            except KeyNotFoundError:
                revision, leases = None, {}
            now = time.time()
            leases = {h: e for h, e in leases.items() if e > now}
            if expires is None:
                if holder not in leases:
                    return True  # gone already (it lapsed): nothing to write
                del leases[holder]
            else:
                if only_if_free and holder not in leases and len(leases) >= self.limit:
                    return False
                leases[holder] = expires
            value = json.dumps(leases).encode()
            try:
                if revision is None:
                    await create_key(self.kv, self.key, value)
                else:
                    await self.kv.update(self.key, value, last=revision)
                return True
            except KeyWrongLastSequenceError:
                await asyncio.sleep(random.uniform(0, 0.003))


async def limit_concurrency(llm, js, base_url: str | None, limit: int) -> None:
    """Give `llm` (an `LLMClient`) the shared slots of its endpoint, when a limit is set."""
    if limit > 0:
        llm.slots = EndpointSlots(await js.key_value(LLM_SLOTS_BUCKET), base_url, limit)
        log.info("at most %d LLM call(s) in flight to %s, across every process", limit, base_url or "OpenAI")
