"""A log record as one logfmt line (gatewayz_telemetry._logfmt): the exact line, its quoting,
the order of its fields, the span's ids, the exception, and the cut of a long line. Pure: records
are built in the test, spans are OpenTelemetry API spans with ids chosen here, nothing is sent."""

from __future__ import annotations

import logging
import sys
import traceback

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from gatewayz_telemetry._logfmt import format_line, trace_ids
from tests.support.strategies import property_settings

WIDE = 100_000


def _record(
    msg: str = "hello",
    args: tuple[object, ...] = (),
    extra: dict[str, object] | None = None,
    name: str = "app",
    exc_info: object = None,
) -> logging.LogRecord:
    """A record as ``logging.getLogger(name).info(msg, *args, extra=extra)`` makes it."""
    return logging.getLogger(name).makeRecord(
        name,
        logging.INFO,
        __file__,
        1,
        msg,
        args,
        exc_info,
        extra=extra,  # type: ignore[arg-type]
    )


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader, from its definition: ``key=value`` pairs separated by one space;
    a value is bare (no space, ``"`` or ``=``) or double-quoted with ``\\"``, ``\\\\``, ``\\n``
    and ``\\r`` escapes. ValueError for anything else (an unterminated quote above all)."""
    fields: dict[str, str] = {}
    escapes = {'"': '"', "\\": "\\", "n": "\n", "r": "\r"}
    i = 0
    while i < len(line):
        equals = line.find("=", i)
        if equals <= i or " " in line[i:equals]:
            raise ValueError(f"no key at {i}: {line[i : i + 20]!r}")
        key, i = line[i:equals], equals + 1
        if line[i : i + 1] == '"':
            value, i = [], i + 1
            while True:
                if i >= len(line):
                    raise ValueError(f"unterminated quoted value of {key!r}")
                char = line[i]
                if char == '"':
                    i += 1
                    break
                if char == "\\":
                    if line[i + 1 : i + 2] not in escapes:
                        raise ValueError(f"bad escape in {key!r}")
                    value.append(escapes[line[i + 1]])
                    i += 2
                    continue
                value.append(char)
                i += 1
            fields[key] = "".join(value)
        else:
            end = line.find(" ", i)
            end = len(line) if end < 0 else end
            bare = line[i:end]
            if '"' in bare or "=" in bare:
                raise ValueError(f"bad bare value of {key!r}: {bare!r}")
            fields[key], i = bare, end
        if i < len(line):
            if line[i] != " ":
                raise ValueError(f"no space after {key!r}")
            i += 1
    return fields


@pytest.fixture
def no_span() -> None:
    assert trace_ids() is None


@pytest.mark.usefixtures("no_span")
def test_msg_logger_then_the_extras_in_the_order_given() -> None:
    record = _record(
        "chat %s",
        ("ok",),
        extra={
            "provider": "openrouter",
            "model": "gpt 4o",
            "user_id": 42,
            "ratio": 0.25,
            "path": "/v1/chat",
            "who": "a+b@x.io,y:z",
            "flag": True,
            "nothing": None,
        },
        name="app.chat",
    )
    assert format_line(record, WIDE) == (
        'msg="chat ok" logger=app.chat provider=openrouter model="gpt 4o" user_id=42 '
        "ratio=0.25 path=/v1/chat who=a+b@x.io,y:z flag=True nothing=None"
    )


@pytest.mark.usefixtures("no_span")
def test_values_are_quoted_and_escaped_only_when_needed() -> None:
    record = _record('say "hi"\nback\\slash\r', extra={"empty": "", "eq": "a=b", "tab": "a\tb"})
    assert format_line(record, WIDE) == (
        r'msg="say \"hi\"\nback\\slash\r" logger=app empty="" eq="a=b" ' + 'tab="a\tb"'
    )


@pytest.mark.usefixtures("no_span")
def test_keys_are_cleaned_and_private_or_standard_attributes_left_out() -> None:
    record = _record(extra={"user.id": 1, "a-b": 2, "a b": 3, "": 4, "_secret": 5})
    record.taskName = "Task-1"  # the asyncio task (3.12+): a standard attribute
    logging.Formatter("%(asctime)s %(message)s").format(record)  # sets message and asctime
    assert format_line(record, WIDE) == "msg=hello logger=app user_id=1 a_b=2 a_b=3 _=4"


@property_settings(300)
@given(message=st.text(), value=st.text())
def test_a_line_is_one_line_that_reads_back_to_its_values(message: str, value: str) -> None:
    record = _record("%s", (message,), extra={"value": value})
    line = format_line(record, WIDE)
    assert "\n" not in line and "\r" not in line
    assert trace_ids() is None
    assert parse_logfmt(line) == {"msg": message, "logger": "app", "value": value}


def test_the_span_ids_come_after_the_extras() -> None:
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with trace.use_span(NonRecordingSpan(context)):
        assert trace_ids() == ("0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7")
        line = format_line(_record(extra={"provider": "p"}), WIDE)
    assert line == (
        "msg=hello logger=app provider=p "
        "trace_id=0af7651916cd43dd8448eb211c80319c span_id=00f067aa0ba902b7"
    )
    assert trace_ids() is None  # the span ended


def test_without_opentelemetry_imported_there_are_no_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    context = SpanContext(trace_id=1, span_id=2, is_remote=False)
    with trace.use_span(NonRecordingSpan(context)):
        assert trace_ids() == ("0" * 31 + "1", "0" * 15 + "2")
        monkeypatch.delitem(sys.modules, "opentelemetry.trace")
        assert trace_ids() is None
        assert format_line(_record(), WIDE) == "msg=hello logger=app"


@pytest.mark.usefixtures("no_span")
def test_the_exception_comes_last_on_the_same_line() -> None:
    try:
        raise RuntimeError('boom "quoted"')
    except RuntimeError:
        exc_info = sys.exc_info()
    line = format_line(_record("failed", extra={"provider": "p"}, exc_info=exc_info), WIDE)
    assert "\n" not in line
    assert line.startswith('msg=failed logger=app provider=p exc="Traceback ')
    expected = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    assert parse_logfmt(line) == {
        "msg": "failed",
        "logger": "app",
        "provider": "p",
        "exc": expected,
    }


@pytest.mark.usefixtures("no_span")
def test_an_exception_already_formatted_is_taken_from_exc_text() -> None:
    record = _record()
    record.exc_text = "Traceback\nValueError: x"
    assert format_line(record, WIDE) == r'msg=hello logger=app exc="Traceback\nValueError: x"'
    record = _record(exc_info=(None, None, None))  # logger.exception() outside an except
    assert format_line(record, WIDE) == "msg=hello logger=app"


@pytest.mark.usefixtures("no_span")
def test_a_long_line_is_cut_and_says_so() -> None:
    record = _record("x" * 100)  # "msg=" + 100 x + " logger=app": 115 characters
    assert format_line(record, 115) == "msg=" + "x" * 100 + " logger=app"  # not longer
    # what fits before " truncated=true" (15 characters) is kept
    assert format_line(record, 114) == "msg=" + "x" * 95 + " truncated=true"
    assert format_line(record, 50) == "msg=" + "x" * 31 + " truncated=true"
    assert len(format_line(record, 50)) == 50
    assert parse_logfmt(format_line(record, 50)) == {"msg": "x" * 31, "truncated": "true"}


@pytest.mark.usefixtures("no_span")
@pytest.mark.parametrize("max_chars", [1, 10])
def test_a_cut_line_is_never_longer_than_the_limit(max_chars: int) -> None:
    assert len(format_line(_record("x" * 100), max_chars)) <= max_chars


@pytest.mark.usefixtures("no_span")
def test_a_line_cut_inside_a_quoted_value_is_still_logfmt() -> None:
    line = format_line(_record("word " * 100), 200)
    assert len(line) <= 200
    assert parse_logfmt(line)["truncated"] == "true"
