"""The worker Deployments of Kubernetes, rendered from one template (issue 17).

Each agent type's workers are a Deployment, a PodDisruptionBudget and a KEDA ScaledObject on the
type's own consumer, identical but for the type's name. They are written once, in
deploy/k8s/worker.template.yaml, and rendered into deploy/k8s/base/workers.yaml for every agent
type: `python -m aether_devstack k8s-workers` prints the file, `--write` writes it, and
`--agents-dir DIR` adds the types of a directory of templates of your own (AETHER_AGENTS_DIR).
tests/unit/test_k8s.py fails when the committed file is not what the built-in types render.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from aether_contracts import topology
from aether_core.templates import TemplateError, load_registry

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
TEMPLATE = K8S / "worker.template.yaml"
OUTPUT = K8S / "base" / "workers.yaml"
PLACEHOLDER = "__AGENT_TYPE__"
HEADER = """\
# Rendered by `python -m aether_devstack k8s-workers --write` from deploy/k8s/worker.template.yaml,
# once per agent type ({types}): edit the template, not this file.
"""
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def render(agent_types: list[str]) -> str:
    """workers.yaml for `agent_types`, in their order."""
    template = TEMPLATE.read_text()
    body = "".join(line for line in template.splitlines(keepends=True) if not line.startswith("#"))
    blocks = []
    for agent_type in agent_types:
        # The type names a Deployment (`executor-<type>`, a DNS label: no '_', unlike a type's
        # pattern; the pattern's 48 characters keep it under 63).
        if not _NAME.match(agent_type):
            raise ValueError(f"agent type {agent_type!r} cannot name a Kubernetes Deployment (lowercase letters, digits, '-')")
        block = body.replace(PLACEHOLDER, agent_type)
        if f"consumer: {topology.worker_consumer(agent_type).durable}\n" not in block:
            raise ValueError(f"{TEMPLATE.name} does not scale on the consumer topology declares for {agent_type}")
        blocks.append(block)
    return HEADER.format(types=", ".join(agent_types)) + "---\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aether-devstack k8s-workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {OUTPUT.relative_to(K8S.parents[1])}")
    parser.add_argument("--agents-dir", type=Path, help="also the agent types of this directory of templates (AETHER_AGENTS_DIR)")
    args = parser.parse_args(argv)
    try:
        types = load_registry(args.agents_dir).agent_types
        text = render(types)
    except (TemplateError, ValueError) as exc:
        parser.exit(2, f"aether-devstack k8s-workers: {exc}\n")
    if args.write:
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT.relative_to(K8S.parents[1])}: workers of {', '.join(types)}")
    else:
        print(text, end="")
    return 0
