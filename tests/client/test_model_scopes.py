"""The worker's side of the model breakers, pure: a batch's model windows hold the very members
of the provider's windows, only for the outcomes a breaker counts; the model admission leaves
refused models out of their calls (counted) and keeps the calls. No Redis."""

from __future__ import annotations

from client._admission import ProviderAdmission
from client._batch import build_batch
from client._events import Event
from client._ledger import NO_NOTES, Ledger
from client._model_scopes import TOO_MANY_MODELS, ModelAdmission, ModelScopes, is_scope
from gatewayz_protocol.partitions import CALLER_ERROR, CANCELLED, FAILURE, RATE_LIMITED, SUCCESS

T = 1_800_000_000.0


def _event(outcome: int, model: str | None, provider: str = "openrouter") -> Event:
    if model is None:
        return (provider, T, 0.2, outcome, 0, 0, None)
    return (provider, T, 0.2, outcome, 0, 0, None, model)


def test_model_windows_repeat_the_providers_members() -> None:
    events = [
        _event(SUCCESS, "a"),
        _event(FAILURE, "a"),
        _event(RATE_LIMITED, "b"),
        _event(CALLER_ERROR, "a"),  # not judged by a breaker: no model member
        _event(SUCCESS, None),
        _event(SUCCESS, None, provider="groq"),
    ]
    batch = build_batch(events, 100, NO_NOTES)
    openrouter = batch.providers["openrouter"]
    members = {m for flat in openrouter.partitions.values() for m in flat[1::2]}
    assert len(members) == 5
    models = openrouter.models
    assert set(models) == {"a", "b"}
    assert set(models["a"]) == {0, 1} and set(models["b"]) == {2}
    for windows in models.values():
        for flat in windows.values():
            assert flat[0] == f"{T:.3f}" and flat[1] in members
    assert models["a"][0][1] != models["a"][1][1]
    assert batch.providers["groq"].models == {}
    assert batch.events == 6  # counted once each, models or not


def test_scopes_only_for_listed_providers_and_real_models() -> None:
    scopes = ModelScopes(("openrouter",), 64)
    assert scopes.scope("openrouter", "gpt-4o") == "openrouter/gpt-4o"
    assert scopes.model("groq", "gpt-4o") is None
    assert scopes.model("openrouter", "") is None
    assert scopes.model("openrouter", 7) is None
    bounded = scopes.model("openrouter", "x" * 500)
    assert bounded is not None and len(bounded.encode()) <= 64
    assert is_scope("openrouter/openai/gpt-4o")
    assert not is_scope("openrouter") and not is_scope("bad name/x") and not is_scope("p/")


class _Registry:
    """Admits the first ``cap`` names it is asked about."""

    def __init__(self) -> None:
        self.held: list[str] = []

    def admit(self, providers: list[str], cap: int, now: float) -> dict[str, bool]:
        answers = {}
        for name in providers:
            if name not in self.held and len(self.held) < cap:
                self.held.append(name)
            answers[name] = name in self.held
        return answers


def test_refused_models_are_left_out_of_their_calls_and_counted() -> None:
    ledger = Ledger()
    registry = _Registry()
    admission = ModelAdmission(
        {"openrouter": ProviderAdmission(registry, 2, lambda: T)}, ledger, cap=2
    )
    events = [_event(SUCCESS, m) for m in ("a", "b", "c", "c", "a")]
    events.append(_event(CANCELLED, None))
    kept = admission.admitted(events)
    assert len(kept) == len(events)  # every call is still booked
    assert [e[7] if len(e) == 8 else None for e in kept] == ["a", "b", None, None, "a", None]
    assert registry.held == ["a", "b"]
    notes = ledger.take_notes()
    assert notes.rejected == {TOO_MANY_MODELS: 2}
    assert admission.admitted([_event(SUCCESS, None)]) == [_event(SUCCESS, None)]
