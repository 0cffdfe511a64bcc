"""``python -m aggregator [flags]``: the scheduler plus the HTTP server (the default command,
``serve.process``); ``python -m aggregator breaker ...`` and ``... inspect ...``: operator
commands (``cli``), which take the same connection flags and env."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

try:
    from aggregator.cli import breaker as breaker_command
    from aggregator.cli import inspection as inspect_command
    from aggregator.options import add_options, make_parser, settings_from_args
    from aggregator.serve.process import serve
    from gatewayz_protocol.deprecations import notices_as_lines
except ModuleNotFoundError as missing:  # a worker's install: the client only
    module = (missing.name or "?").partition(".")[0]
    if module in ("aggregator", "client", "gatewayz_protocol", "gatewayz_transport",
                  "gatewayz_telemetry"):  # fmt: skip
        raise  # part of this project: a broken install or image, not a missing extra
    sys.exit(
        "aggregator: error: the aggregator needs its extra: pip install "
        f"'gatewayz-metrics[aggregator]' (module {module!r} is not installed)"
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The entry point's parser (the serving flags) with its subcommands, and those by name."""
    parser = make_parser(
        "aggregator",
        "gatewayz metrics aggregator: without a command, serve /metrics with the flags below.",
    )
    parser.usage = "%(prog)s [breaker|inspect] [flags]  (a command's flags after it)"
    add_options(parser)
    commands = parser.add_subparsers(
        dest="command", title="commands (flags after the command)", metavar="{breaker,inspect}"
    )
    breaker = commands.add_parser(
        "breaker",
        prog="aggregator breaker",
        help="breaker status|open|close|reset [PROVIDER]: show or force circuit breakers",
        description=breaker_command.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    breaker_command.configure(breaker)
    inspecting = commands.add_parser(
        "inspect",
        prog="aggregator inspect",
        help="inspect [PROVIDER] [--json]: what Redis holds, read only",
        description=inspect_command.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect_command.configure(inspecting)
    return parser, {"breaker": breaker, "inspect": inspecting}


def main(argv: Sequence[str] | None = None) -> int:
    with notices_as_lines("aggregator"):  # a renamed variable: one line, "aggregator: warning:"
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    parsed = parser.parse_args(args)
    if parsed.command is not None and args[0] != parsed.command:
        parser.error(f"put the flags after the command: aggregator {parsed.command} [flags]")
    if parsed.command == "breaker":
        return breaker_command.run_args(parsed, commands["breaker"])
    if parsed.command == "inspect":
        return inspect_command.run_args(parsed, commands["inspect"])
    return serve(settings_from_args(parsed, parser))


if __name__ == "__main__":
    sys.exit(main())
