"""`python -m aether_devstack nats-secrets` (`make k8s-secrets`): the two Secrets that give every
service its own NATS user — `aether-nats-users` (the users and their subject permissions, included
by nats.conf) and `aether-nats-urls` (each service's credentialed AETHER_NATS_URL) — with new
random passwords, as YAML for `kubectl apply -f -`."""

from __future__ import annotations

import argparse
import json
import secrets

from aether_contracts.permissions import GRANTS, nats_authorization

URL_KEYS = ("gateway", "planner", "executor", "agent", "synthesizer")
"""The Deployments' keys in aether-nats-urls (the container-manager does not run on Kubernetes)."""


def generate(namespace: str, host: str) -> tuple[str, dict[str, str], dict[str, str]]:
    passwords = {service: secrets.token_urlsafe(24) for service in GRANTS}
    urls = {key: f"nats://{key}:{passwords[key]}@{host}" for key in URL_KEYS}
    return nats_authorization(passwords), urls, passwords


def manifests(namespace: str, host: str) -> str:
    users, urls, _ = generate(namespace, host)
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
    args = parser.parse_args(argv)
    print(manifests(args.namespace, args.host), end="")
    return 0
