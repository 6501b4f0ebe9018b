"""The README's table of NATS subjects, rendered from the grants and the consumers (issue 17).

Who publishes a subject is what `aether_contracts.permissions.grants` allows each service to
publish; who consumes it is the durable consumers of `aether_contracts.topology` whose filter is
that subject, and the services allowed to subscribe to it (core NATS). So the table cannot miss
a subject a service uses, nor name a publisher nats-server would refuse.
`python -m aether_devstack subjects` prints it; `--write` puts it into the README between its
markers; tests/unit/test_docs.py fails when the README's copy is not this one.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from aether_contracts import permissions, subjects, topology

README = Path(__file__).resolve().parents[3] / "README.md"
BEGIN = "<!-- subjects: rendered by `python -m aether_devstack subjects --write`; do not edit -->"
END = "<!-- /subjects -->"

WHO = {
    "gateway": "gateway",
    "planner": "planner",
    "executor": "executor scheduler",
    "agent": "executor workers",
    "synthesizer": "synthesizer",
    "container-manager": "container-manager",
}
"""The grants' users as the README names them."""

PLACEHOLDERS = {
    subjects.SUBTASK_READY_PREFIX: "<agent_type>",
    subjects.APPROVAL_DEADLINE_PREFIX: "<task_id>",
    subjects.QUESTION_DEADLINE_PREFIX: "<task_id>.<subtask_id>",
    subjects.DEADLINE_PREFIX: "<task_id>",
    subjects.STEP_PREFIX: "<task_id>.<subtask_id>",
    subjects.AGENT_EVENTS_PREFIX: "<started/stopped/failed>",
    subjects.AGENT_CONTROL_PREFIX: "<agent_id>",
}
"""What the wildcard part of a per-id subject stands for."""

SCHEDULED = {subjects.TASK_EXPIRED: "NATS, when a schedule held on `aether.deadline.…` is due"}
"""Subjects no user publishes: nats-server fires them itself."""
HOLDS = f"NATS: a message schedule that fires `{subjects.TASK_EXPIRED}`"
"""Who reads a deadline's holding subject (aether_core.deadlines)."""


def shown(pattern: str) -> str:
    """A grant's or consumer's pattern as the table shows it: `aether.subtask.ready.*` is
    `aether.subtask.ready.<agent_type>`."""
    base = re.sub(r"(\.[*>])+$", "", pattern)
    if base == pattern:
        return pattern
    if base not in PLACEHOLDERS:
        raise ValueError(f"{pattern}: no placeholder for the ids under {base} (PLACEHOLDERS)")
    return f"{base}.{PLACEHOLDERS[base]}"


AGENT_TYPE = PLACEHOLDERS[subjects.SUBTASK_READY_PREFIX]
"""The agent type the grants and the worker consumer are rendered for: its subject and durable
then read as the table shows them (`aether.subtask.ready.<agent_type>`, `executor-<agent_type>`)."""


def rows() -> list[tuple[str, str, str, str]]:
    """(subject, transport, published by, consumed by) for every subject a service uses."""
    table = permissions.grants([AGENT_TYPE])
    published: dict[str, list[str]] = {}
    consumed: dict[str, list[str]] = {}
    for user, grant in table.items():
        for pattern in grant.publish:
            published.setdefault(shown(pattern), []).append(WHO[user])
        for pattern in grant.subscribe:
            consumed.setdefault(shown(pattern), []).append(WHO[user])
    for spec in topology.consumers([AGENT_TYPE]):
        owners = [WHO[u] for u, g in table.items() if spec.durable in g.pulls]
        consumed.setdefault(shown(spec.subject), []).extend(f"{who} (`{spec.durable}`)" for who in owners)
    for subject, by in SCHEDULED.items():
        published.setdefault(subject, []).append(by)
    on_stream = re.compile("|".join(re.escape(s).replace(">", ".+") for s in topology.STREAM_SUBJECTS))
    found = []
    for subject in sorted(published.keys() | consumed.keys(), key=_order):
        transport = "JetStream" if on_stream.fullmatch(subject) else "core NATS"
        if subject.startswith(subjects.DEADLINE_PREFIX + "."):
            consumed.setdefault(subject, []).append(HOLDS)
        found.append((
            subject,
            transport,
            ", ".join(dict.fromkeys(published.get(subject, []))) or "—",
            ", ".join(dict.fromkeys(consumed.get(subject, []))) or "(history; live clients)",
        ))
    return found


_FLOW = [
    subjects.TASK_CREATED, subjects.PLAN_READY, subjects.SUBTASK_READY_PREFIX, subjects.STEP_PREFIX,
    subjects.SUBTASK_FINISHED, subjects.REPLAN_REQUESTED, subjects.SYNTHESIS_REQUESTED,
    subjects.TASK_FINISHED, subjects.DEADLINE_PREFIX, subjects.TASK_EXPIRED, subjects.TASK_CONTROL,
    subjects.AGENT_EVENTS_PREFIX, subjects.AGENT_CONTROL_PREFIX, subjects.MANAGER_CONTROL,
]


def _order(subject: str) -> tuple[int, str]:
    """A task's path first (created, planned, dispatched, finished), then deadlines and control."""
    for i, start in enumerate(_FLOW):
        if subject == start or subject.startswith(start + "."):
            return i, subject
    return len(_FLOW), subject


def render() -> str:
    lines = [
        "| Subject | Carried by | Published by | Consumed by (durable consumer) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| `{s}` | {t} | {p} | {c} |" for s, t, p, c in rows()]
    return "\n".join(lines)


def readme_section(text: str) -> str:
    """The README's copy of the table (between the markers)."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aether-devstack subjects", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="put the table into README.md")
    args = parser.parse_args(argv)
    table = render()
    if args.write:
        text = README.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        README.write_text(text[:start] + "\n" + table + "\n" + text[end:])
    else:
        print(table)
    return 0
