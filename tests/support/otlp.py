"""A stand-in for Tempo's OTLP/HTTP receiver in tests: ``POST /v1/traces`` with a protobuf
``ExportTraceServiceRequest``, answering 200 (or 500 when told). The black hole and the refused
URL of ``tests.support.loki`` serve traces as well (they never look at the path)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.receiver import PostReceiver, running

TRACES_PATH = "/v1/traces"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


class Receiver(PostReceiver):
    """Takes OTLP/HTTP trace exports (protobuf); answers 200, or ``status``."""

    PATH = TRACES_PATH
    STATUS = 200
    CONTENT_TYPE = "application/x-protobuf"

    def __init__(self) -> None:
        self._spans: list[Span] = []
        super().__init__()

    @property
    def exports(self) -> int:
        return self.taken

    @property
    def failed_exports(self) -> int:
        return self.refused

    def _take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self._spans += [
                    Span(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        resource=resource,
                    )
                    for span in scope_spans.spans
                ]

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)


def receiver() -> AbstractContextManager[Receiver]:
    return running(Receiver)
