"""Property-based tests of the plan validator: whatever an LLM sends, parse_plan either returns a
plan that is safe to schedule or raises PlanError with a reason; nothing else ever escapes."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aether_core.templates import load_registry
from aether_planner.planning import PlanError, find_cycle, parse_plan

REGISTRY = load_registry()
IDS = st.text(alphabet="abcdefgh-_.1", min_size=0, max_size=6)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
SUBTASK = st.fixed_dictionaries(
    {},
    optional={
        "id": IDS | st.integers(-3, 30) | JSONISH,
        "description": st.text(max_size=30) | JSONISH,
        "agent_type": st.sampled_from([*REGISTRY.agent_types, "wizard", "", "root"]) | JSONISH,
        "depends_on": st.lists(IDS | st.integers(0, 10), max_size=4) | IDS | JSONISH,
    },
)
PLANS = st.fixed_dictionaries({}, optional={"analysis": JSONISH, "subtasks": st.lists(SUBTASK, max_size=8) | JSONISH})


def check_safe(plan) -> None:
    ids = [s.id for s in plan.subtasks]
    assert len(ids) == len(set(ids)) and 0 < len(ids) <= 10
    for subtask in plan.subtasks:
        assert subtask.agent_type in REGISTRY.agent_types
        assert set(subtask.depends_on) <= set(ids) and subtask.id not in subtask.depends_on
        assert subtask.description.strip()
    assert find_cycle(plan.subtasks) is None


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(PLANS)
def test_any_plan_shaped_json_is_either_safe_or_refused_with_a_reason(data):
    try:
        plan = parse_plan(json.dumps(data), REGISTRY, 10)
    except PlanError as refused:
        assert str(refused)
    else:
        check_safe(plan)


@settings(max_examples=1500)
@given(st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_any_text_is_either_a_safe_plan_or_refused(text):
    try:
        plan = parse_plan(text, REGISTRY, 10)
    except PlanError as refused:
        assert str(refused)
    else:
        check_safe(plan)


@st.composite
def dags(draw):
    n = draw(st.integers(1, 10))
    subtasks = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        subtasks.append({
            "id": f"s{i}",
            "description": f"part {i}",
            "agent_type": draw(st.sampled_from(REGISTRY.agent_types)),
            "depends_on": [f"s{d}" for d in deps],
        })
    return subtasks


@settings(max_examples=500)
@given(dags())
def test_every_valid_dag_is_accepted_unchanged(subtasks):
    plan = parse_plan(json.dumps({"analysis": "a", "subtasks": subtasks}), REGISTRY, 10)
    assert [s.as_dict() for s in plan.subtasks] == subtasks
    assert plan.notes == []


@settings(max_examples=300)
@given(dags(), st.data())
def test_a_back_edge_is_always_caught_as_a_cycle(subtasks, data):
    if len(subtasks) < 2:
        return
    later = data.draw(st.integers(1, len(subtasks) - 1))
    earlier = data.draw(st.integers(0, later - 1))
    # make `earlier` depend on `later`, while `later` (transitively or not) may depend on `earlier`
    subtasks[later]["depends_on"] = sorted({*subtasks[later]["depends_on"], f"s{earlier}"})
    subtasks[earlier]["depends_on"] = [*subtasks[earlier]["depends_on"], f"s{later}"]
    try:
        parse_plan(json.dumps({"subtasks": subtasks}), REGISTRY, 10)
    except PlanError as refused:
        assert "cycle" in str(refused)
    else:
        raise AssertionError("a cycle was accepted")
