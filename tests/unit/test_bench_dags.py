from aether_bench.dags import Dag, Node, workload


def test_the_workload_is_fixed_by_its_seed_and_sized_as_asked():
    first, again = workload(7, 5, mean_ms=1000, sigma=0.6), workload(7, 5, mean_ms=1000, sigma=0.6)
    assert first == again
    assert all(8 <= len(d.nodes) <= 32 for d in first)
    for dag in first:
        ids = [n.id for n in dag.nodes]
        for index, node in enumerate(dag.nodes):
            assert set(node.depends_on) <= set(ids[:index])  # topological, acyclic


def test_critical_path_and_the_level_by_level_bound():
    # a -> b -> c (1 s each) beside a slow root d (2.5 s): the chain need not wait for d.
    nodes = (Node("a", "fullstack", (), 1000), Node("d", "fullstack", (), 2500), Node("b", "fullstack", ("a",), 1000), Node("c", "fullstack", ("b",), 1000))
    dag = Dag("x", nodes, planner_ms=100, synthesis_ms=200)
    assert dag.critical_path_ms() == 100 + 3000 + 200
    assert dag.level_by_level_ms() == 100 + (2500 + 1000 + 1000) + 200
    assert "[[sim latency_ms=2500]]" in dag.description() and "planner.latency_ms=100" in dag.description()
