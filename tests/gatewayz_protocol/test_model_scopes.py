"""The model scopes' pure rules (gatewayz_protocol.model_scopes) and their keys: bounded names,
keys no model name can break out of, what a registry's member may be. No Redis."""

from __future__ import annotations

import pytest

from gatewayz_protocol.keys import Keys
from gatewayz_protocol.model_scopes import (
    MODEL_WINDOW_OF_OUTCOME,
    bounded_model,
    model_horizon_seconds,
    model_key_part,
    read_model_name,
    scope_name,
    split_scope,
)
from gatewayz_protocol.partitions import CALLER_ERROR, CANCELLED, FAILURE, RATE_LIMITED, SUCCESS


def test_model_keys_share_the_providers_hash_tag_and_nothing_else() -> None:
    keys = Keys("ns")
    hostile = "a}{b:c*?[x] \n/é"
    names = [
        *keys.model_window_keys("openrouter", hostile),
        keys.model_breaker("openrouter", hostile),
        keys.model_permits("openrouter", hostile),
        keys.model_transitions("openrouter", hostile),
        keys.models("openrouter"),
    ]
    for key in names:
        assert key.startswith("ns:{openrouter}:")
        assert key.count("{") == 1 and key.count("}") == 1
        assert not set("*?[] \n") & set(key)
    part = "a%7D%7Bb%3Ac%2A%3F%5Bx%5D%20%0A%2F%C3%A9"
    assert keys.model_breaker("openrouter", hostile) == f"ns:{{openrouter}}:m:{part}:breaker"
    assert keys.model_window_keys("openrouter", "gpt-4o") == (
        "ns:{openrouter}:w:m:gpt-4o:ok",
        "ns:{openrouter}:w:m:gpt-4o:fail",
        "ns:{openrouter}:w:m:gpt-4o:rl",
    )
    assert keys.kind(keys.model_breaker("p", hostile)) == "model breaker"
    assert keys.kind(keys.model_permits("p", "x")) == "model permits"
    assert keys.kind(keys.models("p")) == "model registry"
    assert keys.kind(keys.model_window_keys("p", "x")[1]) == "window"


def test_distinct_models_never_share_a_key() -> None:
    models = ["a/b", "a%2Fb", "a:b", "a b", "A/b", "a/b/"]
    assert len({model_key_part(m) for m in models}) == len(models)


def test_model_names_are_bounded_like_label_values() -> None:
    assert bounded_model("openai/gpt-4o", 256) == "openai/gpt-4o"
    long = "m" * 1000
    bounded = bounded_model(long, 64)
    assert bounded is not None and len(bounded.encode()) <= 64
    assert bounded.startswith("m" * 40) and "~" in bounded
    assert bounded_model(long + "x", 64) != bounded  # distinct values stay distinct
    for bad in (None, "", 12, b"gpt", "\ud800"):
        assert bounded_model(bad, 256) is None


def test_a_registry_member_is_read_only_when_a_writer_could_have_written_it() -> None:
    assert read_model_name(b"gpt-4o", 256) == "gpt-4o"
    assert read_model_name("gpt-4o", 256) == "gpt-4o"
    assert read_model_name(b"", 256) is None
    assert read_model_name(b"x" * 257, 256) is None
    assert read_model_name(b"\xff\xfe", 256) is None
    assert read_model_name(3, 256) is None
    assert read_model_name("gpt\ud800", 256) is None  # a lone surrogate: no encoder writes it


def test_outcomes_of_a_model_window_and_the_horizon() -> None:
    assert MODEL_WINDOW_OF_OUTCOME == {SUCCESS: 0, FAILURE: 1, RATE_LIMITED: 2}
    for code in (CALLER_ERROR, CANCELLED):
        assert code not in MODEL_WINDOW_OF_OUTCOME
    assert model_horizon_seconds(8.0, 1.0, 60.0) == 60.0
    assert model_horizon_seconds(90.0, 1.0, 60.0) == 90.0


@pytest.mark.parametrize("model", ["gpt-4o", "openai/gpt-4o", "a/b/c"])
def test_scope_names_split_back(model: str) -> None:
    assert split_scope(scope_name("openrouter", model)) == ("openrouter", model)
    assert split_scope("openrouter") == ("openrouter", None)
