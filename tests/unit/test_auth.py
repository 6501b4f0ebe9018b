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
