"""What an operator's breaker command does, as pure functions: the state ``open``, ``close`` and
``reset`` set, the transition each counts, and the answer every shell gives (the CLI's JSON
lines, the HTTP API's JSON), so ``python -m aggregator breaker`` and ``/admin/breakers`` are one
implementation with two shells (``engine.operator_commands`` runs it against Redis).

- ``open``: forced open, no call goes through until ``reset`` (the consecutive opens kept);
- ``close``: forced closed, every call goes through until ``reset``;
- ``reset``: closed and automatic again, judging only calls after it; a reset of a breaker
  already closed and automatic changes nothing and writes nothing.

A forced state is never changed automatically. Forced closed -> closed changes who decides, not
the state: no transition is counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final, Literal

from gatewayz_protocol.breaker_state import CLOSED, OPEN, BreakerState
from gatewayz_protocol.names import is_valid_provider

ACTIONS: Final = ("open", "close", "reset")
"""The commands that change a breaker (``status`` only reads)."""

ResultKind = Literal["done", "unchanged", "no_data", "not_registered", "conflict"]
"""done: the state was set (or, for status, read); unchanged: a reset with nothing to reset;
no_data: status of an empty namespace or an unknown provider; not_registered: a change asked for
a provider with no traffic seen, without ``create``; conflict: the state kept changing under
the command (each attempt's compare-and-set lost)."""

MAX_SHOWN_NAME: Final = 80
"""Characters of a rejected name quoted back in an error (the rest elided)."""


@dataclass(frozen=True)
class CommandResult:
    """What a command found or did: ``rows`` are the JSON objects it answers (one per breaker
    for status, the state set or the no-op for a change); ``message`` says why when not done."""

    kind: ResultKind
    rows: tuple[dict[str, object], ...] = ()
    message: str = ""


def forced_state(action: str, current: BreakerState, now: float) -> BreakerState:
    """The state an operator action sets, from the current one."""
    epoch = current.epoch + 1
    if action == "open":
        return BreakerState(OPEN, now, epoch, 0.0, current.consecutive_opens, forced=True)
    if action == "close":
        return BreakerState(CLOSED, now, epoch, 0.0, 0, forced=True)
    if action == "reset":
        return BreakerState(CLOSED, now, epoch, 0.0, 0, forced=False)
    raise ValueError(f"unknown action {action!r}")


def changes_nothing(action: str, current: BreakerState) -> bool:
    """A reset of a breaker already closed and automatic: nothing to write."""
    return action == "reset" and current.state == CLOSED and not current.forced


def transition_counted(old: BreakerState, new: BreakerState) -> str:
    """The transition counter a change increments (``open>closed``); empty for closed ->
    closed (forced or not), which changes who decides, not the state."""
    return "" if old.state == new.state == CLOSED else f"{old.state}>{new.state}"


def status_row(
    provider: str, breaker: BreakerState, transitions: dict[str, int]
) -> dict[str, object]:
    """One breaker as ``status`` shows it: the provider, every field of its state and its
    transitions counted by ``from>to``."""
    return {"provider": provider, **asdict(breaker), "transitions": dict(transitions)}


def done_row(provider: str, action: str, new: BreakerState) -> dict[str, object]:
    """What a change that was applied answers: the provider, the action and the state set."""
    return {"provider": provider, "action": action, **asdict(new)}


def unchanged_row(provider: str, action: str) -> dict[str, object]:
    """What a reset with nothing to reset answers."""
    return {
        "provider": provider,
        "action": action,
        "changed": False,
        "message": "already closed and automatic: nothing to reset",
    }


def shown_name(name: str) -> str:
    """A name from outside quoted for an error or a log line: its repr (every control character
    escaped), at most ``MAX_SHOWN_NAME`` characters of it."""
    if len(name) > MAX_SHOWN_NAME:
        return repr(name[:MAX_SHOWN_NAME]) + "..."
    return repr(name)


def command_error(action: str, provider: str | None) -> str | None:
    """Why a command cannot run as asked (None: it can): an unknown action, a change without a
    provider, a provider name outside the rules (README "Provider names")."""
    if action != "status" and action not in ACTIONS:
        return f"unknown action {shown_name(action)}: status, {', '.join(ACTIONS)}"
    if action != "status" and not provider:
        return f"{action} needs a PROVIDER"
    if provider is not None and not is_valid_provider(provider):
        return f"invalid provider name {shown_name(provider)}"
    return None
