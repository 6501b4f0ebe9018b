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


def stable_task_id(scope: str, idempotency_key: str) -> str:
    """The same Idempotency-Key (in the same tenant) always names the same task."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"aether:{scope}:{idempotency_key}"))
