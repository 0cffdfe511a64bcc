"""client/_delegation.py: a part's method offered as the owner's own, with the part's docstring,
looked up on the part at each call (a part replaced, as in a forked child, is the one called)."""

from __future__ import annotations

from client._delegation import delegated


class _Part:
    def __init__(self, name: str) -> None:
        self.name = name

    def greet(self, who: str, *, loud: bool = False) -> str:
        """Says hello."""
        text = f"{self.name} greets {who}"
        return text.upper() if loud else text


class _Owner:
    greet = delegated("_part", _Part.greet)

    def __init__(self) -> None:
        self._part = _Part("first")


def test_a_delegated_method_calls_the_parts_current_method() -> None:
    owner = _Owner()
    assert owner.greet("you") == "first greets you"
    assert owner.greet("you", loud=True) == "FIRST GREETS YOU"
    owner._part = _Part("second")  # replaced (a forked child builds its own parts)
    assert owner.greet("me") == "second greets me"


def test_it_keeps_the_parts_docstring_and_names_its_method() -> None:
    assert _Owner.greet.__doc__ == "Says hello."
    assert _Owner.__dict__["greet"].__wrapped__ is _Part.greet
