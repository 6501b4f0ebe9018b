from datetime import UTC, datetime, timedelta

import pytest

from aether_container_manager.pool import (
    AgentView,
    Phase,
    PoolError,
    PoolPolicy,
    decide,
    parse_overrides,
)

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
