"""A task's subtasks as a graph: each one depends on others, and the plan's order breaks ties.

The graph is a mapping, node id -> the ids it depends on, in plan order (`graph` builds it from
a TaskState's subtasks or a plan's alike). A dependency that is not a key is no node: a subtask
that did not complete, or an id the plan does not contain (plan validation names those). Built
on `graphlib`; where it has no operation (ancestors, descendants) a plain walk of the edges.
Pure functions.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping
from graphlib import CycleError, TopologicalSorter
from typing import Protocol, TypeVar

Graph = Mapping[str, Collection[str]]


class Node(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def depends_on(self) -> list[str]: ...


N = TypeVar("N", bound=Node)


def graph(nodes: Iterable[Node]) -> dict[str, list[str]]:
    """Subtasks (`Subtask`, `PlannedSubtask`) as a graph, in their order."""
    return {node.id: node.depends_on for node in nodes}


def order(nodes: Graph) -> list[str]:
    """Every node after all of its dependencies; ties in the mapping's order: each time the
    first node that may go next goes, so a dependent goes as soon as it may, before later
    independent nodes (graphlib's `static_order` goes level by level), and the same plan always
    gives the same order.

    A cycle cannot pass plan validation; should one be there, the first node left goes next as
    if its dependencies were placed, so every node still comes out once rather than none."""
    rank = {node: n for n, node in enumerate(nodes)}
    placed: list[str] = []
    left = dict(nodes)
    while left:
        sorter = TopologicalSorter({node: [d for d in deps if d in left] for node, deps in left.items()})
        try:
            sorter.prepare()
        except CycleError:
            pass  # what no cycle holds back still comes out of get_ready
        ready = [(rank[node], node) for node in sorter.get_ready()]
        heapq.heapify(ready)
        while ready:
            _, node = heapq.heappop(ready)
            placed.append(node)
            del left[node]
            sorter.done(node)
            for new in sorter.get_ready():
                heapq.heappush(ready, (rank[new], new))
        if left:
            first = next(iter(left))
            placed.append(first)
            del left[first]
    return placed


def _reach(edges: Graph, starts: Iterable[str]) -> set[str]:
    """The ids reached from `starts` along one edge or more (a start only through a cycle)."""
    reached: set[str] = set()
    stack = [nxt for start in starts for nxt in edges.get(start, ())]
    while stack:
        node = stack.pop()
        if node not in reached:
            reached.add(node)
            stack.extend(edges.get(node, ()))
    return reached


def ancestors(nodes: Graph, node: str) -> set[str]:
    """Every node `node` depends on, directly or through others (itself only on a cycle)."""
    return {n for n in _reach(nodes, [node]) if n in nodes}


def descendants(nodes: Graph, roots: Iterable[str]) -> set[str]:
    """Every node that depends on one of `roots`, directly or through others; never a root
    itself. A root need not be a node: what depends on it is still found."""
    dependents: dict[str, list[str]] = {}
    for node, deps in nodes.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(node)
    starts = set(roots)
    return _reach(dependents, starts) - starts


def dependents(nodes: list[N], roots: Iterable[str]) -> list[N]:
    """The subtasks that depend on one of `roots`, directly or through others, in their order
    (`descendants` of their graph, never a root itself)."""
    reached = descendants(graph(nodes), roots)
    return [node for node in nodes if node.id in reached]


def find_cycle(nodes: Graph) -> list[str] | None:
    """A cycle as the path that closes it, each node depending on the next (`a -> c -> b -> a`
    in a plan's problems), or None. The first one found searching depth first from each node in
    order, its dependencies in order, so a plan always names the same one.

    graphlib's CycleError lists each node before its successor; here a node's successors are
    its dependencies (added as `add(dep, node)`, after every node, so the search goes in their
    order: graphlib searches in the order nodes and edges were added), so the path reads the
    way the plan does."""
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for node in nodes:
        sorter.add(node)
    for node, deps in nodes.items():
        for dep in deps:
            sorter.add(dep, node)
    try:
        sorter.prepare()
    except CycleError as cycle:
        return list(cycle.args[1])
    return None
