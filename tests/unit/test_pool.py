from datetime import UTC, datetime, timedelta

import pytest

from aether_container_manager.pool import (
    AgentView,
    Phase,
    PoolError,
    PoolPolicy,
    decide,
    parse_overrides,
    plan_width,
    share_starts,
)
from aether_contracts.state import Subtask

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def idle(agent_id: str, seconds: float) -> AgentView:
    return AgentView(agent_id, Phase.IDLE, NOW - timedelta(seconds=seconds))


def test_a_backlog_scales_up_to_the_maximum_and_no_further():
    policy = PoolPolicy(min_agents=0, max_agents=4)
    assert decide(policy, 20, [], NOW).start == 4
    assert decide(policy, 20, [AgentView("a", Phase.BUSY), AgentView("b", Phase.STARTING)], NOW).start == 2
    assert decide(policy, 20, [AgentView(str(i), Phase.BUSY) for i in range(4)], NOW).start == 0


def test_agents_being_stopped_do_not_count_as_capacity():
    policy = PoolPolicy(max_agents=2)
    decision = decide(policy, 2, [AgentView("a", Phase.STOPPING), AgentView("b", Phase.BUSY)], NOW)
    assert decision.start == 1


def test_the_backlog_per_agent_threshold():
    policy = PoolPolicy(max_agents=10, backlog_per_agent=3)
    assert decide(policy, 7, [], NOW).start == 3  # ceil(7 / 3)
    assert decide(policy, 3, [AgentView("a", Phase.BUSY)], NOW).start == 0


def test_the_warm_minimum_is_kept_without_a_backlog():
    policy = PoolPolicy(min_agents=2, max_agents=4, idle_timeout_s=10)
    assert decide(policy, 0, [], NOW).start == 2
    decision = decide(policy, 0, [idle("a", 100), idle("b", 100)], NOW)
    assert decision.start == 0 and decision.stop == []


def test_only_agents_idle_past_the_timeout_stop_longest_idle_first():
    policy = PoolPolicy(min_agents=1, max_agents=4, idle_timeout_s=30)
    agents = [idle("recent", 5), idle("old", 300), idle("older", 600), AgentView("busy", Phase.BUSY)]
    decision = decide(policy, 0, agents, NOW)
    # desired is the minimum (1): three may go, but "recent" is not idle long enough
    assert decision.stop == ["older", "old"]


def test_busy_and_starting_agents_are_never_stopped():
    policy = PoolPolicy(min_agents=0, max_agents=4, idle_timeout_s=0)
    agents = [AgentView("busy", Phase.BUSY), AgentView("new", Phase.STARTING)]
    assert decide(policy, 0, agents, NOW).stop == []


def test_nothing_stops_while_the_backlog_needs_the_agents():
    policy = PoolPolicy(max_agents=4, idle_timeout_s=0)
    agents = [idle("a", 100), idle("b", 100)]
    assert decide(policy, 2, agents, NOW).stop == []
    assert decide(policy, 1, agents, NOW).stop == ["a"]


@pytest.mark.parametrize(
    "kwargs",
    [{"min_agents": 3, "max_agents": 2}, {"max_agents": 0}, {"backlog_per_agent": 0}, {"idle_timeout_s": -1}],
)
def test_impossible_policies_are_refused(kwargs):
    with pytest.raises(PoolError):
        PoolPolicy(**kwargs)


def test_per_type_overrides():
    base = PoolPolicy(min_agents=0, max_agents=4, idle_timeout_s=60)
    policies = parse_overrides("python-backend:min=1,max=8; testing-expert:max=2,idle=5", base, ["python-backend", "testing-expert", "fullstack"])
    assert policies["python-backend"] == PoolPolicy(min_agents=1, max_agents=8, idle_timeout_s=60)
    assert policies["testing-expert"] == PoolPolicy(max_agents=2, idle_timeout_s=5)
    assert policies["fullstack"] == base


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("nosuch:max=2", "unknown agent type"),
        ("fullstack:maximum=2", "unknown pool setting"),
        ("fullstack:max=two", "not a number"),
        ("fullstack:min=5,max=2", "min"),
    ],
)
def test_bad_overrides_fail_loudly(text, error):
    with pytest.raises(PoolError, match=error):
        parse_overrides(text, PoolPolicy(), ["fullstack"])


def planned(id_: str, agent_type: str, *deps: str) -> Subtask:
    return Subtask(id=id_, title=id_, description=id_, agent_type=agent_type, depends_on=list(deps))


def test_a_plans_width_per_type_is_the_most_of_its_subtasks_on_one_level():
    # a -> (b, c, d) -> e, with b, c, e frontend and a, d backend; f backend is independent
    plan = [
        planned("a", "python-backend"),
        planned("b", "react-frontend", "a"),
        planned("c", "react-frontend", "a"),
        planned("d", "python-backend", "a"),
        planned("e", "react-frontend", "b", "c", "d"),
        planned("f", "python-backend"),
    ]
    assert plan_width(plan) == {"python-backend": 2, "react-frontend": 2}


def test_a_chain_is_one_wide_however_long_and_finished_dependencies_count_as_done():
    chain = [planned("s0", "testing-expert")] + [planned(f"s{i}", "testing-expert", f"s{i - 1}") for i in range(1, 3000)]
    assert plan_width(chain) == {"testing-expert": 1}
    # s0..s9 done: the rest still one wide; a fan-out whose root is done runs all at once
    assert plan_width(chain[10:]) == {"testing-expert": 1}
    fan = [planned(f"leaf{i}", "fullstack", "root") for i in range(7)]
    assert plan_width(fan) == {"fullstack": 7}
    assert plan_width([]) == {}


def test_the_level_is_the_longest_chain_not_the_shortest():
    # x depends on a root and on a chain of two: it cannot run beside the chain's first
    plan = [
        planned("r", "devops-expert"),
        planned("c1", "devops-expert"),
        planned("c2", "database-expert", "c1"),
        planned("x", "devops-expert", "r", "c2"),
    ]
    assert plan_width(plan) == {"devops-expert": 2, "database-expert": 1}


def test_a_process_agent_runs_four_subtasks_a_container_one_and_the_pool_scales_by_that(monkeypatch):
    from aether_container_manager.settings import ContainerManagerSettings

    for name in ("AETHER_AGENT_BACKEND", "AETHER_AGENT_CONCURRENCY", "AETHER_POOL_BACKLOG_PER_AGENT"):
        monkeypatch.delenv(name, raising=False)
    process = ContainerManagerSettings()
    assert (process.subtasks_per_agent, process.backlog_per_agent) == (4, 4)
    docker = ContainerManagerSettings(agent_backend="docker")
    assert (docker.subtasks_per_agent, docker.backlog_per_agent) == (1, 1)
    monkeypatch.setenv("AETHER_AGENT_CONCURRENCY", "8")
    monkeypatch.setenv("AETHER_POOL_BACKLOG_PER_AGENT", "2")
    tuned = ContainerManagerSettings(agent_backend="docker")
    assert (tuned.subtasks_per_agent, tuned.backlog_per_agent) == (8, 2)
    # 9 subtasks the plan can run at once, 4 per agent: 3 agents
    assert decide(PoolPolicy(max_agents=4, backlog_per_agent=process.backlog_per_agent), 9, [], NOW).start == 3


def test_starts_share_a_budget_queued_work_first_and_the_types_take_turns():
    # database-expert has queued work for 4 agents; the others only planned work
    wanted = {"database-expert": (4, 4), "python-backend": (0, 4), "react-frontend": (0, 2)}
    assert share_starts(wanted, 2) == {"database-expert": 2}
    assert share_starts(wanted, 5) == {"database-expert": 4, "python-backend": 1}
    assert share_starts(wanted, 7) == {"database-expert": 4, "python-backend": 2, "react-frontend": 1}
    assert share_starts(wanted, 100) == {"database-expert": 4, "python-backend": 4, "react-frontend": 2}
    # two types with queued work: each gets its first agent before either gets a second
    assert share_starts({"a": (3, 3), "b": (3, 3)}, 3) == {"a": 2, "b": 1}
    assert share_starts(wanted, 0) == {} and share_starts(wanted, -1) == {}
