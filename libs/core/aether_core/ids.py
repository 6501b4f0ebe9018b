import secrets
import time
import uuid


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7): task ids sort by creation time."""
    millis = time.time_ns() // 1_000_000
    rand = secrets.randbits(74)
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def stable_task_id(tenant: str | None, idempotency_key: str) -> str:
    """The same Idempotency-Key in the same tenant always names the same task, and no two
    (tenant, key) pairs name one: each part is length-prefixed, so no separator inside a tenant's
    name or a key can make one pair read as another."""
    parts = ("aether-task", "" if tenant is None else f"t{tenant}", idempotency_key)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "".join(f"{len(p)}:{p}" for p in parts)))
