"""KV writes as the services make them, with what a replicated bucket (`AETHER_NATS_REPLICAS=3`,
the prod overlay) adds to nats-py's own."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue


async def create_key(kv: KeyValue, key: str, value: bytes) -> int:
    """`kv.create`: the key's first revision, or `KeyWrongLastSequenceError` if it exists.

    A create refused because the key exists makes nats-py read the key, to tell a deleted key
    (which it may recreate) from a live one. On a replicated bucket the leader refuses a write
    that conflicts with one still being replicated, and a read then does not see that write
    yet: nats-py raises `KeyNotFoundError` for a key another writer has just created (three of
    four losing creates did so in 20 concurrent ones on three replicas; none on one). It is the
    same conflict, and callers handle it as one (issue 18).
    """
    try:
        return await kv.create(key, value)
    except KeyNotFoundError as exc:
        raise KeyWrongLastSequenceError(description="wrong last sequence (being created by another writer)") from exc
