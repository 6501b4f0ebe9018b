"""The devstack's secrets on disk: the dev API key and a NATS password per user, each in a file of
the data dir that only its owner can read from the moment it exists (never written first and
restricted after, when another local user could open it in between)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

API_KEY_FILE = "api-key"
NATS_USERS_FILE = "nats-users.json"
"""`{user: password}` of the embedded NATS (aether_contracts.permissions); read by the tests'
harness for the `admin` user."""


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only, atomically (a temporary file made
    0600 by `open` itself, then renamed over it)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_private(path: Path, text: str) -> bool:
    """Create `path` 0600 with `text` unless it exists; False if it did (it is left alone)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return True


def api_key(data_dir: Path) -> str:
    """The dev API key, made once per data dir."""
    path = data_dir / API_KEY_FILE
    create_private(path, secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def nats_passwords(data_dir: Path, users: Iterable[str]) -> dict[str, str]:
    """A random password per NATS user, made once per data dir; a user added since is given one."""
    path = data_dir / NATS_USERS_FILE
    users = list(users)
    fresh = {user: secrets.token_urlsafe(24) for user in users}
    if create_private(path, json.dumps(fresh, indent=2)):
        return fresh
    known = json.loads(path.read_text())
    if set(users) <= known.keys():
        return {user: known[user] for user in users}
    write_private(path, json.dumps({**fresh, **known}, indent=2))
    return {user: known.get(user, fresh[user]) for user in users}


def nats_url(user: str, password: str, address: str) -> str:
    return f"nats://{user}:{password}@{address}"
