"""The NATS grants as rendered (aether_contracts.permissions): only the topology user declares,
nobody deletes or purges, nobody holds a wildcard over the JetStream API or another's inbox."""

import pytest

from aether_contracts import subjects, topology
from aether_contracts.permissions import (
    ADMIN,
    TOPOLOGY,
    USERS,
    grants,
    nats_authorization,
    publish_allowed,
    subscribe_allowed,
)
from aether_core.templates import load_registry

AGENT_TYPES = load_registry(None).agent_types
DECLARING = ("$JS.API.STREAM.CREATE.", "$JS.API.STREAM.UPDATE.", f"$JS.API.CONSUMER.CREATE.{topology.STREAM}")


@pytest.mark.parametrize("workers_in_executor", [False, True])
def test_only_the_topology_user_declares_and_nobody_deletes_or_purges(workers_in_executor):
    for user, grant in grants(AGENT_TYPES, workers_in_executor=workers_in_executor).items():
        allowed = publish_allowed(grant, AGENT_TYPES)
        assert not [s for s in allowed if ".DELETE." in s or ".PURGE." in s], user
        assert bool([s for s in allowed if s.startswith(DECLARING)]) == (user == TOPOLOGY), user
        assert not [s for s in allowed if s.startswith(("$JS.API.>", "$JS.API.*", "$JS.ACK.>", "_INBOX", ">"))], user
        assert subscribe_allowed(grant, user)[-1] == f"{subjects.inbox_prefix(user)}.>"
        assert not [s for s in subscribe_allowed(grant, user) if s.startswith(("_INBOX.", ">", "$"))], user


def test_each_durable_is_pulled_by_exactly_one_user():
    pulled: dict[str, list[str]] = {}
    for user, grant in grants(AGENT_TYPES).items():
        for durable in grant.pulls:
            pulled.setdefault(durable, []).append(user)
    assert pulled == {spec.durable: [pulled[spec.durable][0]] for spec in topology.consumers(AGENT_TYPES)}
    assert {pulled[topology.worker_consumer(t).durable][0] for t in AGENT_TYPES} == {"agent"}


def test_the_executor_running_its_workers_has_both_grants():
    table = grants(AGENT_TYPES, workers_in_executor=True)
    alone = grants(AGENT_TYPES)
    both = set(publish_allowed(table["executor"]))
    assert set(publish_allowed(alone["executor"])) | set(publish_allowed(alone["agent"])) == both
    assert table["executor"].answers and table["executor"].workspace == "write"


def test_admin_is_rendered_only_when_asked_for():
    block = nats_authorization({user: "pw" for user in USERS}, AGENT_TYPES)
    assert f'user: "{ADMIN}"' not in block and all(f'user: "{u}"' in block for u in USERS)
    block = nats_authorization({ADMIN: "pw"}, AGENT_TYPES)
    assert 'publish: {allow: [">"]}' in block and 'subscribe: {allow: [">"]}' in block
