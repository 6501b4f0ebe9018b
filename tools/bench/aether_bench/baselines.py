"""The two ways people run such a DAG today, written as a user of each would write them, against
the same LLM simulator as Aether: the Phase 1 loop (run the ready set with asyncio.gather, wait
for all of it, repeat) and LangGraph (a StateGraph with a node per subtask and an edge per
dependency, joins for subtasks with several); and the floor: an in-process scheduler that starts
each subtask the moment its own dependencies are done, with nothing between the calls."""

from __future__ import annotations

import asyncio
import json
import operator
import time
import uuid
from typing import Annotated, Any, TypedDict

from openai import AsyncOpenAI, omit

from .dags import Dag


class Llm:
    def __init__(self, base_url: str) -> None:
        self.client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=120)

    async def call(self, role: str, task_id: str, user: str, *, subtask: dict | None = None, json_mode: bool = False) -> str:
        headers = {"X-Aether-Role": role, "X-Aether-Task-Id": task_id}
        if subtask is not None:
            headers |= {"X-Aether-Subtask-Id": subtask["id"], "X-Aether-Agent-Type": subtask["agent_type"]}
        response = await self.client.chat.completions.create(
            model="bench",
            messages=[{"role": "system", "content": f"You are the {role}."}, {"role": "user", "content": user}],
            extra_headers=headers,
            response_format={"type": "json_object"} if json_mode else omit,
        )
        return response.choices[0].message.content or ""

    async def close(self) -> None:
        await self.client.close()


def task_text(dag: Dag) -> str:
    return f"<task>\n{dag.description()}\n</task>"


def expert_prompt(dag: Dag, subtask: dict, results: dict[str, str]) -> str:
    parts = [task_text(dag), "", f"Your subtask ({subtask['id']}): {subtask['description']}"]
    for dep in subtask["depends_on"]:
        parts += ["", f"### Result of {dep} (dependency)", results[dep]]
    return "\n".join(parts)


def synthesis_prompt(dag: Dag, results: dict[str, str]) -> str:
    return "\n".join([task_text(dag), *(f"### Result of {k}\n{v}" for k, v in results.items())])


async def plan_of(llm: Llm, dag: Dag, task_id: str) -> list[dict]:
    return json.loads(await llm.call("planner", task_id, task_text(dag), json_mode=True))["subtasks"]


async def phase1(llm: Llm, dag: Dag) -> float:
    """Seconds from start to synthesis, level by level."""
    task_id = f"phase1-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    subtasks = await plan_of(llm, dag, task_id)
    results: dict[str, str] = {}
    pending = list(subtasks)
    while pending:
        ready = [s for s in pending if set(s["depends_on"]) <= results.keys()]
        outputs = await asyncio.gather(
            *(llm.call("expert", task_id, expert_prompt(dag, s, results), subtask=s) for s in ready)
        )
        results.update({s["id"]: out for s, out in zip(ready, outputs, strict=True)})
        pending = [s for s in pending if s["id"] not in results]
    await llm.call("synthesizer", task_id, synthesis_prompt(dag, results))
    return time.perf_counter() - started


class GraphState(TypedDict):
    results: Annotated[dict[str, str], operator.or_]


async def langgraph(llm: Llm, dag: Dag) -> float:
    """Seconds from start to synthesis, as a LangGraph StateGraph built from the plan."""
    from langgraph.graph import END, START, StateGraph

    task_id = f"langgraph-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    subtasks = await plan_of(llm, dag, task_id)
    graph = StateGraph(GraphState)

    def node(subtask: dict):
        async def run(state: GraphState) -> dict[str, Any]:
            out = await llm.call("expert", task_id, expert_prompt(dag, subtask, state["results"]), subtask=subtask)
            return {"results": {subtask["id"]: out}}

        return run

    async def synthesize(state: GraphState) -> dict[str, Any]:
        await llm.call("synthesizer", task_id, synthesis_prompt(dag, state["results"]))
        return {}

    depended_on = {d for s in subtasks for d in s["depends_on"]}
    for subtask in subtasks:
        graph.add_node(subtask["id"], node(subtask))
        graph.add_edge(subtask["depends_on"] if subtask["depends_on"] else START, subtask["id"])
    graph.add_node("synthesize", synthesize)
    graph.add_edge([s["id"] for s in subtasks if s["id"] not in depended_on], "synthesize")
    graph.add_edge("synthesize", END)
    await graph.compile().ainvoke({"results": {}}, {"recursion_limit": 10_000})
    return time.perf_counter() - started


async def floor(llm: Llm, dag: Dag) -> float:
    """Seconds from start to synthesis when each subtask awaits exactly its dependencies, in one
    process: what any orchestrator could reach on this machine with these calls."""
    task_id = f"floor-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    subtasks = await plan_of(llm, dag, task_id)
    results: dict[str, str] = {}
    running: dict[str, asyncio.Task[None]] = {}

    async def run(subtask: dict) -> None:
        for dependency in subtask["depends_on"]:
            await running[dependency]
        results[subtask["id"]] = await llm.call("expert", task_id, expert_prompt(dag, subtask, results), subtask=subtask)

    for subtask in subtasks:  # a plan lists dependencies first: each awaited task exists
        running[subtask["id"]] = asyncio.create_task(run(subtask))
    await asyncio.gather(*running.values())
    await llm.call("synthesizer", task_id, synthesis_prompt(dag, results))
    return time.perf_counter() - started
