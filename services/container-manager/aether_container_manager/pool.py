"""How many agents of one type should run: a pure function of the demand and the pool.

The demand of a type is the larger of its backlog (queued plus in-flight subtasks) and its
planned width: how many of the type's subtasks the plans in flight can run at once
(`plan_width`), known when a plan is ready, before its later subtasks are queued. Scale up as
soon as the demand needs more agents than there are, up to the maximum; scale down only agents
that have been idle longer than the timeout, and never below the warm minimum nor below what the
demand needs. Busy agents are never stopped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from aether_core import dag


class PoolError(ValueError):
    pass


@dataclass(frozen=True)
class PoolPolicy:
    min_agents: int = 0
    max_agents: int = 4
    backlog_per_agent: int = 1
    """Backlog one agent is expected to absorb; more than this per agent starts another."""
    idle_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.min_agents < 0 or self.max_agents < 1 or self.min_agents > self.max_agents:
            raise PoolError(f"need 0 <= min ({self.min_agents}) <= max ({self.max_agents}), max >= 1")
        if self.backlog_per_agent < 1:
            raise PoolError("backlog_per_agent must be at least 1")
        if self.idle_timeout_s < 0:
            raise PoolError("idle_timeout_s must not be negative")


class Phase(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"


@dataclass(frozen=True)
class AgentView:
    id: str
    phase: Phase
    idle_since: datetime | None = None


@dataclass
class PoolDecision:
    start: int = 0
    stop: list[str] = field(default_factory=list)
    desired: int = 0


class PlannedSubtask(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def agent_type(self) -> str: ...

    @property
    def depends_on(self) -> list[str]: ...


def plan_width(subtasks: Iterable[PlannedSubtask]) -> dict[str, int]:
    """Per agent type, the most of its subtasks that can run at once among those given (the ones
    still to finish; a dependency not among them counts as done).

    Each subtask's level is the length of its longest chain of dependencies among them; a type's
    width is the most of its subtasks on one level. A level runs together only when its calls
    take alike: an estimate, never more than the type's count.
    """
    given = {s.id: s for s in subtasks}
    level: dict[str, int] = {}
    for node in dag.order({i: [d for d in s.depends_on if d in given] for i, s in given.items()}):
        level[node] = 1 + max((level[d] for d in given[node].depends_on if d in level), default=-1)
    on_level = Counter((given[node].agent_type, level[node]) for node in given)
    width: dict[str, int] = {}
    for (agent_type, _), count in on_level.items():
        width[agent_type] = max(width.get(agent_type, 0), count)
    return width


def desired_agents(policy: PoolPolicy, backlog: int) -> int:
    needed = math.ceil(backlog / policy.backlog_per_agent) if backlog > 0 else 0
    return max(policy.min_agents, min(policy.max_agents, needed))


def decide(policy: PoolPolicy, backlog: int, agents: list[AgentView], now: datetime) -> PoolDecision:
    active = [a for a in agents if a.phase != Phase.STOPPING]
    desired = desired_agents(policy, backlog)
    if len(active) < desired:
        return PoolDecision(start=desired - len(active), desired=desired)
    surplus = len(active) - desired
    expired = sorted(
        (
            a
            for a in active
            if a.phase == Phase.IDLE
            and a.idle_since is not None
            and (now - a.idle_since).total_seconds() >= policy.idle_timeout_s
        ),
        key=lambda a: a.idle_since,  # type: ignore[arg-type,return-value]
    )
    return PoolDecision(stop=[a.id for a in expired[:surplus]], desired=desired)


def share_starts(wanted: dict[str, tuple[int, int]], budget: int) -> dict[str, int]:
    """How many agents of each type to start now, when at most `budget` may start at once (each
    start is a process importing its libraries, or a container: on a small machine many at once
    starve each other and the agents already working).

    `wanted`: per type, (starts its queued work needs, starts its demand needs, that included).
    Queued work goes first, then what the plans will need; the types take turns, so no type's
    first agent waits behind another type's fourth.
    """
    given = dict.fromkeys(wanted, 0)
    for needs in (0, 1):
        while budget > 0:
            turn = [t for t, want in wanted.items() if given[t] < want[needs]]
            if not turn:
                break
            for agent_type in turn[:budget]:
                given[agent_type] += 1
                budget -= 1
    return {t: n for t, n in given.items() if n}


def parse_overrides(text: str, base: PoolPolicy, known_types: list[str]) -> dict[str, PoolPolicy]:
    """`python-backend:min=1,max=8;testing-expert:max=2,idle=30` -> a policy per type."""
    policies = {t: base for t in known_types}
    keys = {"min": "min_agents", "max": "max_agents", "backlog": "backlog_per_agent", "idle": "idle_timeout_s"}
    for item in filter(None, (p.strip() for p in text.split(";"))):
        agent_type, _, settings = item.partition(":")
        agent_type = agent_type.strip()
        if agent_type not in policies:
            raise PoolError(f"pool override for unknown agent type {agent_type!r}")
        values = {}
        for pair in filter(None, (p.strip() for p in settings.split(","))):
            key, _, value = pair.partition("=")
            if key.strip() not in keys:
                raise PoolError(f"unknown pool setting {key!r} in {item!r}; use {', '.join(keys)}")
            try:
                number = float(value) if key.strip() == "idle" else int(value)
            except ValueError as exc:
                raise PoolError(f"{key}={value!r} in {item!r} is not a number") from exc
            values[keys[key.strip()]] = number
        current = policies[agent_type]
        policies[agent_type] = PoolPolicy(**{**current.__dict__, **values})
    return policies
