"""One configuration: every option table of the project (the shared options of
gatewayz_protocol/options.py, the client's, the aggregator's, telemetry's) follows the same rules,
and the values both sides read are declared once."""

from __future__ import annotations

from aggregator.option_table import AGGREGATOR_OPTIONS
from client._settings import CLIENT_OPTIONS
from gatewayz_protocol.options import (
    AGGREGATOR,
    CLIENT,
    PREFIX,
    SHARED,
    STANDARD_PREFIXES,
    TELEMETRY,
)
from gatewayz_telemetry.settings import TELEMETRY_OPTIONS

TABLES = (SHARED, CLIENT_OPTIONS, AGGREGATOR_OPTIONS, TELEMETRY_OPTIONS)
EVERY_OPTION = {id(option): option for table in TABLES for option in table}


def test_every_table_follows_the_rules() -> None:
    """One prefix (or a standard name); one variable per option and one option per variable,
    old names included, across every table; who reads it said; the shared options read by both
    sides; one flag per aggregator option."""
    variables: dict[str, str] = {}
    for option in EVERY_OPTION.values():
        assert option.env.startswith((PREFIX, *STANDARD_PREFIXES)), option.env
        assert option.read_by and set(option.read_by) <= {CLIENT, AGGREGATOR, TELEMETRY}
        for name in (option.env, *option.deprecated):
            assert variables.setdefault(name, option.env) == option.env, name
    assert all({CLIENT, AGGREGATOR} <= set(option.read_by) for option in SHARED)
    for table in TABLES:
        assert len({option.name for option in table}) == len(table)
    flags = [option.flag for option in AGGREGATOR_OPTIONS]
    assert None not in flags and len(set(flags)) == len(flags)
    assert all(AGGREGATOR in option.read_by for option in AGGREGATOR_OPTIONS)
    assert all(CLIENT in option.read_by for option in CLIENT_OPTIONS)
    assert all(TELEMETRY in option.read_by for option in TELEMETRY_OPTIONS)


def test_each_value_both_sides_read_is_declared_once() -> None:
    """The client and the aggregator read the shared values through the same declarations."""
    for option in SHARED:
        assert any(o is option for o in CLIENT_OPTIONS), option.env
        assert any(o is option for o in AGGREGATOR_OPTIONS), option.env
