"""`python -m aether_devstack nats-secrets` (`make k8s-secrets`): the two Secrets that give every
service its own NATS user — `aether-nats-users` (the users and their permissions, included by
nats.conf) and `aether-nats-urls` (each one's credentialed AETHER_NATS_URL, `topology` for the
gateway pods' init container that declares the topology) — with new random passwords, as YAML for
`kubectl apply -f -`. The worker consumers are one per agent type: custom agent types
(`--agents-dir`, default AETHER_AGENTS_DIR) need the Secrets made again."""

from __future__ import annotations

import argparse
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from aether_contracts.permissions import TOPOLOGY, USERS, nats_authorization
from aether_core.templates import load_registry

URL_KEYS = ("gateway", "planner", "executor", "agent", "synthesizer", TOPOLOGY)
"""The keys in aether-nats-urls the manifests use (no container-manager runs on Kubernetes)."""


def generate(
    namespace: str, host: str, agent_types: Iterable[str] | None = None
) -> tuple[str, dict[str, str], dict[str, str]]:
    if agent_types is None:
        agent_types = load_registry(None).agent_types
    passwords = {user: secrets.token_urlsafe(24) for user in USERS}
    urls = {key: f"nats://{key}:{passwords[key]}@{host}" for key in URL_KEYS}
    return nats_authorization(passwords, agent_types), urls, passwords


def manifests(namespace: str, host: str, agent_types: Iterable[str] | None = None) -> str:
    users, urls, _ = generate(namespace, host, agent_types)
    indented = "\n".join("    " + line for line in users.splitlines())
    url_lines = "\n".join(f"  {key}: {json.dumps(url)}" for key, url in urls.items())
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: aether-nats-users\n"
        f"  namespace: {namespace}\ntype: Opaque\nstringData:\n  users.conf: |\n{indented}\n"
        "---\n"
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: aether-nats-urls\n"
        f"  namespace: {namespace}\ntype: Opaque\nstringData:\n{url_lines}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aether-devstack nats-secrets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default="aether")
    parser.add_argument("--host", default="nats:4222", help="the NATS client Service, as pods reach it")
    parser.add_argument(
        "--agents-dir",
        default=os.environ.get("AETHER_AGENTS_DIR") or None,
        help="custom agent templates, as the services get them (AETHER_AGENTS_DIR)",
    )
    args = parser.parse_args(argv)
    agent_types = load_registry(Path(args.agents_dir) if args.agents_dir else None).agent_types
    print(manifests(args.namespace, args.host, agent_types), end="")
    return 0
