"""How a process is told of a renamed variable it still reads (``options.lookup``): once per
process for each old name, and never as lines of this project's code.

- In a gateway's process (``MetricsClient.from_env()``, ``gatewayz_telemetry.setup()``): a
  :class:`FutureWarning` (shown by default, unlike a ``DeprecationWarning``), attributed to the
  first caller outside this project's packages (the gateway's line that reads the settings), as
  Python attributes a library's warnings to the code that called it.
- In one of this project's own commands (``python -m aggregator``, the demo: within
  :func:`notices_as_lines`): one line on its stderr, ``<command>: warning: <message>``; a warning
  there could only name a file, a line and a source line of this project's code, which tell its
  operator nothing.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

_ROOT = Path(__file__).resolve().parent.parent
_NAMES = ("gatewayz_protocol", "gatewayz_transport", "gatewayz_telemetry", "client", "aggregator")
_PACKAGES = tuple(f"{_ROOT / name}{os.sep}" for name in _NAMES)
"""The directories of this project's packages: their frames are never a warning's caller."""

_told: set[tuple[str, str]] = set()
_told_lock = threading.Lock()
_commands: list[str] = []
"""The commands within ``notices_as_lines``, innermost last."""


def _new_lock_in_child() -> None:
    global _told_lock  # a parent's thread may have held it when it forked
    _told_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def tell_once(old: str, new: str, message: str) -> None:
    """Tell ``message`` of the old name ``old`` (replaced by ``new``), once per process (a
    Gunicorn master tells it once, before it forks its workers)."""
    with _told_lock:
        if (old, new) in _told:
            return
        _told.add((old, new))
    if _commands:
        sys.stderr.write(f"{_commands[-1]}: warning: {message}\n")
        sys.stderr.flush()
        return
    warnings.warn(message, FutureWarning, stacklevel=_outside_level())


def _outside_level() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in ``tell_once`` name the first frame
    outside this project's packages (2 names ``tell_once``'s caller)."""
    level = 2
    here = inspect.currentframe()  # this function's; its caller's caller is level 2
    frame: FrameType | None = here.f_back.f_back if here and here.f_back else None
    while frame is not None and os.path.realpath(frame.f_code.co_filename).startswith(_PACKAGES):
        level, frame = level + 1, frame.f_back
    return level


@contextmanager
def notices_as_lines(command: str) -> Iterator[None]:
    """Within: this project's command ``command`` (``aggregator``) is told of renamed variables
    as one line each on its stderr, ``<command>: warning: <message>``, not as a warning."""
    _commands.append(command)
    try:
        yield
    finally:
        _commands.pop()


def forget_notices() -> None:
    """Tell every deprecation again (tests)."""
    with _told_lock:
        _told.clear()
