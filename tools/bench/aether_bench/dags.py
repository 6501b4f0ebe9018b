"""The benchmark's workload: random DAGs from a fixed seed, with log-normal LLM latencies.

Each subtask's latency is written into its description as a simulator directive, so every system
under test (Aether, the level-by-level loop, LangGraph) gets exactly the same latency for the same
call from the same simulator.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

AGENT_TYPES = ["python-backend", "react-frontend", "database-expert", "devops-expert", "fullstack", "testing-expert"]


@dataclass(frozen=True)
class Node:
    id: str
    agent_type: str
    depends_on: tuple[str, ...]
    latency_ms: int


@dataclass(frozen=True)
class Dag:
    name: str
    nodes: tuple[Node, ...]
    planner_ms: int
    synthesis_ms: int

    def critical_path_ms(self) -> int:
        """Planning + the longest chain of dependent calls + synthesis: no schedule beats it."""
        finish: dict[str, int] = {}
        for node in self.nodes:  # topological order by construction
            finish[node.id] = node.latency_ms + max((finish[d] for d in node.depends_on), default=0)
        return self.planner_ms + max(finish.values()) + self.synthesis_ms

    def level_by_level_ms(self) -> int:
        """What waiting for the whole ready set before the next one costs, at best."""
        done: set[str] = set()
        total = 0
        remaining = list(self.nodes)
        while remaining:
            ready = [n for n in remaining if set(n.depends_on) <= done]
            total += max(n.latency_ms for n in ready)
            done |= {n.id for n in ready}
            remaining = [n for n in remaining if n.id not in done]
        return self.planner_ms + total + self.synthesis_ms

    def plan(self) -> dict:
        return {
            "analysis": f"benchmark DAG {self.name}",
            "subtasks": [
                {
                    "id": n.id,
                    "description": f"Build part {n.id} [[sim latency_ms={n.latency_ms}]]",
                    "agent_type": n.agent_type,
                    "depends_on": list(n.depends_on),
                }
                for n in self.nodes
            ],
        }

    def description(self) -> str:
        """A task description that makes the simulator plan exactly this DAG, with these latencies."""
        return (
            f"Benchmark task {self.name} "
            f"[[sim planner.latency_ms={self.planner_ms} synthesizer.latency_ms={self.synthesis_ms}]]\n"
            f"SIM-PLAN: {json.dumps(self.plan())}"
        )


def lognormal_ms(rng: random.Random, mean_ms: float, sigma: float) -> int:
    mu = math.log(mean_ms) - sigma**2 / 2
    return max(1, round(rng.lognormvariate(mu, sigma)))


def random_dag(rng: random.Random, name: str, *, size: int, mean_ms: float, sigma: float) -> Dag:
    """Chains and fan-outs mixed: each node depends on 0-3 earlier ones, recent ones likelier."""
    nodes: list[Node] = []
    for i in range(size):
        if i == 0:
            deps: list[str] = []
        else:
            shape = rng.random()
            if shape < 0.35:  # continue a chain
                deps = [nodes[-1].id]
            elif shape < 0.6:  # fan out from an early node
                deps = [nodes[rng.randrange(0, max(1, i // 3))].id]
            elif shape < 0.85:  # join two or three
                deps = sorted({n.id for n in rng.sample(nodes, k=min(len(nodes), rng.randint(2, 3)))})
            else:  # an independent root
                deps = []
        nodes.append(
            Node(
                id=f"s{i}",
                agent_type=rng.choice(AGENT_TYPES),
                depends_on=tuple(deps),
                latency_ms=lognormal_ms(rng, mean_ms, sigma),
            )
        )
    return Dag(
        name=name,
        nodes=tuple(nodes),
        planner_ms=lognormal_ms(rng, mean_ms, sigma),
        synthesis_ms=lognormal_ms(rng, mean_ms, sigma),
    )


def workload(seed: int, count: int, *, mean_ms: float, sigma: float, sizes: tuple[int, int] = (8, 32)) -> list[Dag]:
    rng = random.Random(seed)
    return [
        random_dag(rng, f"{seed}-{i}", size=rng.randint(*sizes), mean_ms=mean_ms, sigma=sigma)
        for i in range(count)
    ]
