"""The subtasks' graph (aether_core.dag) on a task's subtasks and on a plan's: the order, ties in
plan order, ancestors and descendants, unknown dependencies, and the cycle a plan is refused for."""

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from aether_contracts.state import SubtaskStatus
from aether_core import dag
from aether_core.plans import PlannedSubtask, find_cycle
from aether_core.workspace import commit_order
from aether_executor import scheduling
from tests.support.states import task


def planned(*subtasks: tuple[str, list[str]]) -> list[PlannedSubtask]:
    return [PlannedSubtask(i, f"do {i}", "fullstack", list(d)) for i, d in subtasks]


def test_the_order_puts_dependencies_first_and_breaks_ties_in_plan_order():
    state = task(("d", ["b", "c"]), ("b", ["a"]), ("a", []), ("c", ["a"]))
    assert dag.order(dag.graph(state.subtasks)) == ["a", "b", "c", "d"]
    assert dag.order(dag.graph(planned(("x", []), ("y", []), ("z", [])))) == ["x", "y", "z"]


def test_a_dependent_goes_as_soon_as_it_may_not_level_by_level():
    # graphlib's static_order would give a, c, b (the ready ones level by level).
    state = task(("b", ["a"]), ("a", []), ("c", []))
    assert dag.order(dag.graph(state.subtasks)) == ["a", "b", "c"]


def test_a_diamond():
    state = task(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))
    nodes = dag.graph(state.subtasks)
    assert dag.order(nodes) == ["a", "b", "c", "d"]
    assert dag.ancestors(nodes, "d") == {"a", "b", "c"}
    assert dag.ancestors(nodes, "b") == {"a"}
    assert dag.ancestors(nodes, "a") == set()
    assert dag.descendants(nodes, ["a"]) == {"b", "c", "d"}
    assert dag.descendants(nodes, ["b", "c"]) == {"d"}
    assert dag.descendants(nodes, ["a", "b"]) == {"c", "d"}, "a root is never its own descendant"
    assert dag.find_cycle(nodes) is None


def test_a_dependency_that_is_no_node_is_ignored():
    state = task(("b", ["a", "ghost"]), ("a", []), ("c", ["ghost"]))
    nodes = dag.graph(state.subtasks)
    assert dag.order(nodes) == ["a", "b", "c"]
    assert dag.ancestors(nodes, "b") == {"a"}
    assert dag.ancestors(nodes, "ghost") == set()
    assert dag.descendants(nodes, ["ghost"]) == {"b", "c"}, "what depends on an unknown id is still found"
    assert dag.find_cycle(nodes) is None


def test_commit_order_leaves_out_what_did_not_complete_and_orders_the_rest_without_it():
    state = task(("a", []), ("b", ["a"]), ("c", ["b"]), ("d", []))
    for subtask in state.subtasks:
        subtask.status = SubtaskStatus.COMPLETED
    state.subtask("b").status = SubtaskStatus.FAILED
    assert [s.id for s in commit_order(state)] == ["a", "c", "d"]


def test_dependents_are_transitive_in_plan_order():
    state = task(("c", ["b"]), ("a", []), ("b", ["a"]), ("x", []), ("y", ["x"]))
    assert [s.id for s in scheduling.dependents(state, "a")] == ["c", "b"]
    assert scheduling.dependents(state, "y") == []


def test_a_cycle_is_the_path_that_closes_it_each_node_depending_on_the_next():
    assert find_cycle(planned(("a", ["c"]), ("b", ["a"]), ("c", ["b"]))) == ["a", "c", "b", "a"]
    # found from the first subtask, but the path starts where the cycle does
    assert find_cycle(planned(("x", ["y"]), ("y", ["z"]), ("z", ["y"]))) == ["y", "z", "y"]
    # the first of two, searching in plan order
    assert find_cycle(planned(("p", []), ("q", ["r"]), ("r", ["q"]), ("s", ["t"]), ("t", ["s"]))) == ["q", "r", "q"]
    assert find_cycle(planned(("x", ["ghost", "y"]), ("y", ["x"]))) == ["x", "y", "x"]


def test_a_self_loop_is_a_cycle():
    assert find_cycle(planned(("a", []), ("b", ["a", "b"]))) == ["b", "b"]


def test_a_cycle_in_a_state_still_orders_every_subtask_once():
    # A cycle cannot pass plan validation; if one were there, the order must not loop or drop.
    nodes = dag.graph(task(("a", ["b"]), ("b", ["a"]), ("c", []), ("d", ["a"]), ("e", ["e"])).subtasks)
    assert dag.order(nodes) == ["c", "a", "b", "d", "e"]
    assert dag.ancestors(nodes, "a") == {"a", "b"}
    assert dag.descendants(nodes, ["a"]) == {"b", "d"}


@st.composite
def graphs(draw) -> dict[str, list[str]]:
    """A plan's subtasks in a shuffled order, each depending only on ones made before it."""
    n = draw(st.integers(0, 12))
    made = [f"s{i}" for i in range(n)]
    deps = {node: draw(st.lists(st.sampled_from(made[:i] or ["ghost"]), max_size=3)) for i, node in enumerate(made)}
    shuffled = draw(st.permutations(made))
    return dag.graph(task(*((node, deps[node]) for node in shuffled)).subtasks)


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_the_order_respects_every_edge_and_holds_every_node_once(nodes):
    placed = dag.order(nodes)
    assert sorted(placed) == sorted(nodes)
    at = {node: n for n, node in enumerate(placed)}
    for node, deps in nodes.items():
        assert all(at[d] < at[node] for d in deps if d in nodes)
        assert dag.ancestors(nodes, node) == {a for a in nodes if node in dag.descendants(nodes, [a])}
    assert dag.find_cycle(nodes) is None


@settings(max_examples=300, deadline=None)
@given(graphs(), st.data())
def test_a_back_edge_is_found_as_a_cycle_that_closes(nodes, data):
    if not nodes:
        return
    made = sorted(nodes, key=lambda node: int(node[1:]))
    later = data.draw(st.sampled_from(made))
    earlier = data.draw(st.sampled_from(made[: made.index(later) + 1]))
    nodes[earlier] = [*nodes[earlier], later]
    nodes[later] = [*nodes[later], earlier]
    cycle = dag.find_cycle(nodes)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert all(b in nodes[a] for a, b in pairwise(cycle))
    assert sorted(dag.order(nodes)) == sorted(nodes)
