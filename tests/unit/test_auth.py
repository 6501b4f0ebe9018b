import pytest

from aether_gateway.auth import AuthConfigError, KeyRing


def test_keys_from_the_environment_and_a_file(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# tenants\ncarol carol-key-0123456789ab\nops ops-key-0123456789abcd admin  # operators\n\n")
    ring = KeyRing.load(enabled=True, keys="alice:alice-key-0123456789,bob:bob-key-0123456789ab:admin", keys_file=keys_file)
    assert len(ring) == 4


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ("", "no API key is configured"),
        ("alice:short", "shorter than 16"),
        ("alice", "expected 'tenant key [admin]'"),
        ("alice:alice-key-0123456789:root", "expected 'tenant key [admin]'"),
    ],
)
def test_bad_key_configurations_refuse_to_start(keys, error):
    with pytest.raises(AuthConfigError) as refused:
        KeyRing.load(enabled=True, keys=keys, keys_file=None)
    assert error in str(refused.value)


def test_a_missing_keys_file_is_named(tmp_path):
    with pytest.raises(AuthConfigError, match="nope"):
        KeyRing.load(enabled=True, keys="", keys_file=tmp_path / "nope")


def test_auth_off_needs_no_keys():
    assert not KeyRing.load(enabled=False, keys="", keys_file=None).enabled


def test_idempotency_ids_of_two_tenants_never_collide():
    from aether_core.ids import stable_task_id

    # Joined with ':' these were one string, "a:b:c": two tenants shared a task id.
    assert stable_task_id("a:b", "c") != stable_task_id("a", "b:c")
    assert stable_task_id(None, "k") != stable_task_id("", "k") != stable_task_id("-", "k")
    assert stable_task_id("alice", "k") == stable_task_id("alice", "k")


def test_a_signed_link_opens_one_download_of_one_task_until_it_expires():
    from fastapi import HTTPException

    from aether_gateway.auth import LinkSigner, visible

    ring = KeyRing.load(enabled=True, keys="alice:alice-key-0123456789", keys_file=None)
    other = KeyRing.load(enabled=True, keys="alice:alice-key-0123456789,bob:bob-key-0123456789ab", keys_file=None)
    assert ring.secret("download-links") != other.secret("download-links") != other.secret("something else")
    signer = LinkSigner(ring.secret("download-links"), lifetime_s=60)
    url = signer.sign("/x", "task-1", "bundle")
    query = dict(part.split("=") for part in url.split("?", 1)[1].split("&"))
    principal = signer.principal("task-1", "bundle", query["expires"], query["signature"])
    assert principal.link == ("task-1", "bundle") and not principal.admin
    assert not visible(principal, "alice") and not visible(principal, None)
    for task, download, expires in (("task-2", "bundle", query["expires"]), ("task-1", "archive", query["expires"]),
                                    ("task-1", "bundle", str(int(query["expires"]) + 1)), ("task-1", "bundle", "x")):
        with pytest.raises(HTTPException) as refused:
            signer.principal(task, download, expires, query["signature"])
        assert refused.value.status_code == 401
    stale = signer.sign("/x", "task-1", "bundle", now=0)
    stale_query = dict(part.split("=") for part in stale.split("?", 1)[1].split("&"))
    with pytest.raises(HTTPException, match="expired"):
        signer.principal("task-1", "bundle", stale_query["expires"], stale_query["signature"])
    with pytest.raises(HTTPException):
        LinkSigner(other.secret("download-links"), 60).principal("task-1", "bundle", query["expires"], query["signature"])


def test_subjects_with_ids_are_counted_under_their_pattern():
    from aether_contracts import subjects

    assert subjects.metric_label(subjects.deadline("0193-task")) == "aether.deadline.*"
    assert subjects.metric_label(subjects.agent_control("agent-7")) == "aether.control.agent.*"
    assert subjects.metric_label("_INBOX.abc.def") == "_INBOX.*"
    for fixed in (subjects.TASK_CREATED, subjects.subtask_ready("fullstack"), subjects.TASK_EXPIRED):
        assert subjects.metric_label(fixed) == fixed
