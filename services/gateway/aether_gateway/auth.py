"""API keys: each key is a tenant, which sees and touches only its own tasks.

Every route needs a key but the few in `OPEN_PATHS` (probes, health, docs, metrics): the check is
an app-wide dependency (`authenticate`), so a new route is closed unless it is added there. A
key travels in `Authorization: Bearer`; only the live streams also take `?access_token=`
(browsers' EventSource and WebSocket cannot set headers), and downloads take a short-lived
signed link instead of a key (`LinkSigner`), so no key ends up in a URL that is logged, traced or
kept in a browser's history.

Keys come from `AETHER_API_KEYS` (`tenant:key[:admin],…`) and/or `AETHER_API_KEYS_FILE` (one
`tenant key [admin]` per line, `#` comments). Only their SHA-256 digests are kept in memory,
and a presented key is compared by digest, so no key can be recovered from the gateway, and
the comparison does not depend on how much of a key matched. `admin` tenants may also manage
the agent pool. With `AETHER_AUTH=off` every request is the anonymous tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException
from starlette.requests import HTTPConnection

MIN_KEY_CHARS = 16


class AuthConfigError(ValueError):
    pass


OPEN_PATHS = frozenset(
    {"/api/health", "/livez", "/readyz", "/metrics", "/api/config", "/docs", "/docs/assets/{name}", "/openapi.json",
     "/.well-known/agent-card.json"}
)
"""Routes anyone may call: they carry counts, states of processes and a URL, nothing of a tenant.
(The Mission Board's static files and the docs' assets are mounts, outside the route table.)"""
QUERY_KEY_SUFFIX = "/stream"
"""Routes whose path ends so accept `?access_token=`: the live streams."""


@dataclass(frozen=True)
class Principal:
    tenant: str | None
    """None when authentication is off: one shared, anonymous tenant."""
    admin: bool
    link: tuple[str, str] | None = None
    """A signed download link's (task id, download): it may fetch that and nothing else."""


ANONYMOUS = Principal(tenant=None, admin=True)
LINK_TENANT = "\0link"
"""The tenant of a link principal: no task has it, so `visible` is false for every task."""


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

    def principal(self, request: HTTPConnection, *, query: bool = False) -> Principal:
        """The caller of an HTTP request or a WebSocket; 401 without a valid key. `query`: the
        key may come as `?access_token=` (the stream routes only)."""
        if not self.enabled:
            return ANONYMOUS
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if (scheme.lower() != "bearer" or not token.strip()) and query:
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

    def secret(self, purpose: str) -> bytes:
        """A secret only this deployment's gateways hold: derived from every configured key's
        digest, so replicas with the same keys agree without sharing anything else."""
        material = "\n".join(sorted(self._by_digest)).encode()
        return hmac.new(material, f"aether:{purpose}".encode(), hashlib.sha256).digest()


class LinkSigner:
    """Short-lived download links: `?expires=<unix time>&signature=<hmac>` stands in for a key on
    one task's one download, so a browser's anchor (which cannot send a header) needs no key."""

    def __init__(self, secret: bytes, lifetime_s: float) -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s

    def _signature(self, task_id: str, download: str, expires: int) -> str:
        message = f"{len(task_id)}:{task_id}|{len(download)}:{download}|{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, path: str, task_id: str, download: str, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime_s)
        return f"{path}?expires={expires}&signature={self._signature(task_id, download, expires)}"

    def principal(self, task_id: str, download: str, expires: str, signature: str) -> Principal:
        """The link's principal; 401 when the link is forged, for another download, or expired."""
        if not expires.isdigit() or int(expires) < time.time():
            raise HTTPException(401, "this download link has expired: open the task again for a new one")
        if not hmac.compare_digest(self._signature(task_id, download, int(expires)), signature):
            raise HTTPException(401, "invalid download link signature")
        return Principal(tenant=LINK_TENANT, admin=False, link=(task_id, download))


def visible(principal: Principal, tenant: str | None) -> bool:
    """Whether a task of `tenant` exists for this caller (others' tasks are a plain 404)."""
    return not principal.tenant or principal.tenant == tenant


def is_open(path: str | None) -> bool:
    return path in OPEN_PATHS


class RedactTokens(logging.Filter):
    """Keeps `?access_token=` (how browsers authenticate streams) out of the server's logs:
    uvicorn logs every WebSocket's path with its query string."""

    PATTERN = re.compile(r"((?:access_token|signature)=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "access_token=" in message or "signature=" in message:
            record.msg, record.args = self.PATTERN.sub(r"\1[redacted]", message), ()
        return True


def redact_tokens_in_logs(*names: str) -> None:
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
