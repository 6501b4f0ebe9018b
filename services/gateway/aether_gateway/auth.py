"""API keys: each key is a tenant, which sees and touches only its own tasks.

Keys come from `AETHER_API_KEYS` (`tenant:key[:admin],…`) and/or `AETHER_API_KEYS_FILE` (one
`tenant key [admin]` per line, `#` comments). Only their SHA-256 digests are kept in memory,
and a presented key is compared by digest, so no key can be recovered from the gateway, and
the comparison does not depend on how much of a key matched. `admin` tenants may also manage
the agent pool. With `AETHER_AUTH=off` every request is the anonymous tenant.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException
from starlette.requests import HTTPConnection

MIN_KEY_CHARS = 16


class AuthConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    tenant: str | None
    """None when authentication is off: one shared, anonymous tenant."""
    admin: bool


ANONYMOUS = Principal(tenant=None, admin=True)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, entries: dict[str, Principal], *, enabled: bool) -> None:
        self._by_digest = entries
        self.enabled = enabled

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def load(cls, *, enabled: bool, keys: str, keys_file: Path | None) -> KeyRing:
        if not enabled:
            return cls({}, enabled=False)
        entries: dict[str, Principal] = {}
        lines = [("AETHER_API_KEYS", i, item.replace(":", " ")) for i, item in enumerate(keys.split(","), 1)]
        if keys_file is not None:
            try:
                text = keys_file.read_text()
            except OSError as exc:
                raise AuthConfigError(f"AETHER_API_KEYS_FILE {keys_file}: {exc}") from exc
            lines += [(str(keys_file), i, line.split("#", 1)[0]) for i, line in enumerate(text.splitlines(), 1)]
        for source, number, line in lines:
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != "admin"):
                raise AuthConfigError(f"{source} entry {number}: expected 'tenant key [admin]'")
            tenant, key = fields[0], fields[1]
            if len(key) < MIN_KEY_CHARS:
                raise AuthConfigError(
                    f"{source} entry {number}: the key of tenant {tenant!r} is shorter than {MIN_KEY_CHARS} characters"
                )
            entries[_digest(key)] = Principal(tenant=tenant, admin=len(fields) == 3)
        if not entries:
            raise AuthConfigError(
                "authentication is on but no API key is configured: set AETHER_API_KEYS or "
                "AETHER_API_KEYS_FILE, or AETHER_AUTH=off to run without keys"
            )
        return cls(entries, enabled=True)

    def principal(self, request: HTTPConnection) -> Principal:
        """The caller of an HTTP request or a WebSocket; 401 without a valid key."""
        if not self.enabled:
            return ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            # EventSource and WebSocket clients cannot set headers: a query parameter is accepted.
            token = request.query_params.get("access_token", "")
        principal = self._by_digest.get(_digest(token.strip())) if token.strip() else None
        if principal is None:
            raise HTTPException(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return principal


def visible(principal: Principal, tenant: str | None) -> bool:
    """Whether a task of `tenant` exists for this caller (others' tasks are a plain 404)."""
    return not principal.tenant or principal.tenant == tenant


class RedactTokens(logging.Filter):
    """Keeps `?access_token=` (how browsers authenticate streams) out of the server's logs:
    uvicorn logs every WebSocket's path with its query string."""

    PATTERN = re.compile(r"(access_token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "access_token=" in message:
            record.msg, record.args = self.PATTERN.sub(r"\1[redacted]", message), ()
        return True


def redact_tokens_in_logs(*names: str) -> None:
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
