"""The example gateway's request body (the origin's ``ChatCompletionRequest`` in shape), the same
before and after the migration."""

from __future__ import annotations

from pydantic import BaseModel, Field

from examples.origin_style.upstream import Behaviour


class ChatRequest(BaseModel):
    model: str
    messages: list[dict[str, str]] = Field(default_factory=list)
    stream: bool = False
    behaviour: dict[str, Behaviour] = Field(default_factory=dict)
    """How each provider answers this request (a provider not named: ``Behaviour()``, a success
    in 10 ms). The fake providers' switchboard, so a test knows every outcome."""

    def behaviour_of(self, provider: str) -> Behaviour:
        return self.behaviour.get(provider) or Behaviour()
