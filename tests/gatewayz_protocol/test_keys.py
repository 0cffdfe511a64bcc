"""The key schema and the name rules (gatewayz_protocol.keys, gatewayz_protocol.names): pure,
no Redis."""

from __future__ import annotations

import pytest

from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import is_valid_provider


@pytest.mark.parametrize(
    "name",
    ["openrouter", "google-vertex", "fireworks.ai", "a", "A9_b", "7up", "a" * 64],
)
def test_valid_provider_names(name: str) -> None:
    assert is_valid_provider(name) is True


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        "open}router",
        "open{router",
        "{openrouter}",
        "open:router",
        "open*",
        "open router",
        "openrouter\n",
        "\nopenrouter",
        "opénrouter",
        "-openrouter",
        ".openrouter",
        "_openrouter",
        5,
        None,
        b"x",
        ["openrouter"],
    ],
)
def test_invalid_provider_names(name: object) -> None:
    assert is_valid_provider(name) is False


def test_window_keys_format() -> None:
    keys = Keys("ns").window_keys("openrouter")
    # 20 finite latency partitions + +Inf = 21 ok keys, then fail, rl, ce
    assert len(keys) == 24
    assert keys[0] == "ns:{openrouter}:w:ok:0"
    assert keys[20] == "ns:{openrouter}:w:ok:20"
    assert keys[21:] == ("ns:{openrouter}:w:fail", "ns:{openrouter}:w:rl", "ns:{openrouter}:w:ce")
    assert keys[:21] == tuple(f"ns:{{openrouter}}:w:ok:{i}" for i in range(21))


def test_totals_and_breaker_format() -> None:
    keys = Keys("ns")
    assert keys.totals("openrouter") == "ns:{openrouter}:totals"
    assert keys.breaker("openrouter") == "ns:{openrouter}:breaker"


def test_provider_keys_share_hash_tag_and_namespace() -> None:
    keys = Keys("ns")
    provider = "fireworks.ai"
    all_keys = [*keys.window_keys(provider), keys.totals(provider), keys.breaker(provider)]
    for key in all_keys:
        assert key.startswith("ns:")
        assert "{fireworks.ai}" in key
        # exactly one hash tag, so Redis Cluster hashes on the provider name only
        assert key.count("{") == 1
        assert key.count("}") == 1


def test_default_namespace() -> None:
    assert Keys().totals("a") == "gatewayz:{a}:totals"


@pytest.mark.parametrize("provider", ["", "bad name", "x}y", "a" * 65, "-a"])
def test_keys_reject_invalid_provider(provider: str) -> None:
    keys = Keys("ns")
    with pytest.raises(ValueError):
        keys.window_keys(provider)
    with pytest.raises(ValueError):
        keys.totals(provider)
    with pytest.raises(ValueError):
        keys.breaker(provider)


@pytest.mark.parametrize("namespace", ["", "a:b", "{ns}", "-ns", "n s", "a" * 65, "ns\n"])
def test_keys_reject_invalid_namespace(namespace: str) -> None:
    with pytest.raises(ValueError):
        Keys(namespace)
