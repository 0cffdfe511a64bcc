"""Shutdown hooks: SIGTERM, and multiprocessing children that end with ``os._exit()``.

Python's default SIGTERM ends a process at once, without atexit: whatever its clients had
buffered was lost. Where the process's SIGTERM handler is still the default when a client is
constructed in the main thread, ``watch()`` installs one handler for the whole process (not one
per client) that flushes every live client, for at most ``FLUSH_SECONDS``, then ends the
process as the default would: SIG_DFL restored and SIGTERM re-sent, so the exit status is still
"killed by SIGTERM". A handler the application set earlier is chained (called after the flush,
instead of dying); one it sets later replaces ours (its choice). SIG_IGN, and handlers not set
from Python, are left alone. Gunicorn installs its own handlers after importing the
application and replaces this one; uvicorn replaces it while serving, then restores it and
re-raises SIGTERM, which flushes what is left. Built after a server set its handler, the client
chains that handler.

The handler is lent, not kept: when the last client that asked for it closes (``unwatch()``,
from ``close()``) or is garbage-collected, and the handler is still ours, what it replaced is
put back (SIG_DFL, or the application's handler it chained), as uvicorn's
``capture_signals()`` does; the next client installs it again. Only the main thread may set a
handler: when the last client closes in another thread, ours stays, and with no client to
flush it does exactly what the handler it replaced would (and puts that one back when it runs).
A forked child inherits the handler and the clients; it puts the handler back when its own last
client closes, the parent's stays as it is.

The handler runs in the main thread between two bytecodes, possibly while that thread holds a
lock of the client (the buffer's, the ledger's: not re-entrant, or re-entrant but mid-update)
that the flush needs. So the flush always runs in a thread of its own, and the handler waits
for it only when the interrupted code is outside this package (it then holds none of the
client's locks): the application does no more work. When the signal caught the main thread
inside the client, the handler returns at once and the flush thread re-sends SIGTERM when it
is done; the interrupted code goes on meanwhile (milliseconds; at most ``FLUSH_SECONDS``), and
what it records after the signal is not waited for. If that code closes the last client
meanwhile, the handler it puts back receives the re-sent signal: SIGTERM ends the process as
it would have. The handler itself never blocks on a lock.

Multiprocessing children (``fork``, ``forkserver``) and pool workers end with ``os._exit()``
and skip atexit: a client they use is closed by a ``multiprocessing.util.Finalize`` that runs
when the child's ``run()`` ends (armed through ``multiprocessing.util.register_after_fork``).
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("gatewayz.metrics.client")

FLUSH_SECONDS = 5.0
"""How long SIGTERM waits for the flush (``close()``'s default timeout): a paused or
unreachable Redis delays the end of the process by at most this (plus a second)."""

_WAIT_MARGIN_SECONDS = 1.0  # the flush thread's own bookkeeping after its flushes timed out
_PACKAGE = __name__.partition(".")[0]

Handler = Callable[[int, FrameType | None], Any]


class Flushable(Protocol):
    """What the hooks need of a client (``MetricsClient``)."""

    def flush(self, timeout: float = ...) -> bool: ...

    def close(self, timeout: float = ...) -> bool: ...

    def stats(self) -> dict[str, Any]: ...


class _Flush:
    """One SIGTERM's flush, run in a thread of its own."""

    def __init__(self, signum: int, detached: bool) -> None:
        self.signum = signum
        self.detached = detached  # the handler returned: this thread re-sends the signal
        self.done = _thread.allocate_lock()
        self.done.acquire()

    def run(self) -> None:
        try:
            _flush_all(FLUSH_SECONDS)
        except Exception:
            log.exception("metrics: flushing on SIGTERM failed")
        finally:
            self.done.release()
            if self.detached and _job is self:  # not ended meanwhile by another SIGTERM
                # To the main thread itself: its blocking wait is interrupted, and the handler
                # runs at once (Python runs handlers in the main thread only).
                main = threading.main_thread().ident
                if main is not None:
                    signal.pthread_kill(main, self.signum)


class _Watched:
    """A client hooked into this process's shutdown, weakly: the hooks never keep it alive."""

    __slots__ = ("ref", "sigterm")

    def __init__(self, client: Flushable, sigterm: bool) -> None:
        self.ref = weakref.ref(client, _collected)
        self.sigterm = sigterm
        """Flush it on SIGTERM: it asked (``handle_sigterm``) and has not closed."""


# Per process. A list rather than a WeakSet: the flush thread copies it with one atomic
# tuple() while another thread may be constructing a client.
_clients: list[_Watched] = []
_clients_lock = threading.Lock()
_armed: weakref.WeakSet[Flushable] = weakref.WeakSet()  # closed at this child's end
_installed = False  # our handler is set, or was and someone replaced it (then final)
_previous: Handler | None = None  # what our handler replaced and chains; None: SIG_DFL
_job: _Flush | None = None  # the flush under way


def watch(client: Flushable, *, sigterm: bool) -> None:
    """Hook ``client`` into this process's shutdown (called by ``MetricsClient.__init__``;
    no I/O, never raises). With ``sigterm`` (``ClientSettings.handle_sigterm``) SIGTERM flushes
    it, installing the handler if this is the main thread and SIGTERM's handler is still the
    default or a Python function (chained). A client constructed in another thread is flushed
    by the handler once a client constructed in the main thread installed it. In any case a
    multiprocessing child closes it when its ``run()`` ends. ``unwatch()`` undoes the SIGTERM
    part."""
    try:
        with _clients_lock:
            _clients[:] = [watched for watched in _clients if watched.ref() is not None]
            _clients.append(_Watched(client, sigterm))
        if sigterm:
            _install()
        _watch_child_exit(client)
    except Exception:
        log.debug("metrics: shutdown hooks not installed", exc_info=True)


def _install() -> None:
    global _installed, _previous
    if _installed or threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set a handler
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:  # still ours (put back by a server): chains what it did
        _installed = True
        return
    if current is signal.SIG_DFL:
        previous: Handler | None = None
    elif callable(current):
        previous = current
    else:
        return  # SIG_IGN: the process must keep ignoring it; None: not set from Python
    _previous = previous  # before the handler can run
    signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True


def unwatch(client: Flushable) -> None:
    """``client`` closed (called by ``MetricsClient.close()``; never raises): SIGTERM no longer
    flushes it. When no open client asks for SIGTERM handling any more, the handler it
    installed is put back as it was."""
    try:
        for watched in tuple(_clients):
            if watched.ref() is client:
                watched.sigterm = False
        _restore_if_unused()
    except Exception:
        log.debug("metrics: SIGTERM handler not put back", exc_info=True)


def _collected(ref: weakref.ref[Flushable]) -> None:
    """A watched client was garbage-collected without being closed (any thread, at any
    allocation: so this takes no lock)."""
    try:  # noqa: SIM105 (no contextlib: module globals may be gone at interpreter shutdown)
        _restore_if_unused()
    except Exception:  # never out of a weakref callback
        pass


def _subscribed() -> bool:
    """Whether an open client asks for SIGTERM handling."""
    return any(watched.sigterm and watched.ref() is not None for watched in tuple(_clients))


def _restore_if_unused() -> None:
    """Put back what our handler replaced, once no open client asks for it and the handler is
    still ours (one set since is the application's or a server's, and stays). Only the main
    thread can: elsewhere ours stays, and behaves as the one it replaced (``_on_sigterm``)."""
    global _installed
    if not _installed or _subscribed():
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        return
    _installed = False  # first: a handler or callback running in between sees it done
    signal.signal(signal.SIGTERM, _previous or signal.SIG_DFL)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """The SIGTERM handler (main thread). Waits on nothing but the flush thread's latch."""
    global _job
    if _job is not None:
        # The flush thread re-sent the signal once done, or a second SIGTERM came during the
        # flush: end now, as the sender insists.
        _job = None
        _finish(signum, frame)
        return
    if not _subscribed():
        # The last client closed in a thread that could not put the handler back: SIGTERM
        # does what it did without us, and from now on it is that handler's again.
        _restore_if_unused()
        _finish(signum, frame)
        return
    job = _job = _Flush(signum, detached=_inside_client(frame))
    try:
        # _thread rather than threading: Thread.start() takes threading's own locks, which the
        # interrupted code may hold.
        _thread.start_new_thread(job.run, ())
    except Exception:  # no thread to be had (interpreter shutting down): end unflushed
        _job = None
        _finish(signum, frame)
        return
    if job.detached:
        return  # let the interrupted code release its locks; the flush thread signals again
    job.done.acquire(True, FLUSH_SECONDS + _WAIT_MARGIN_SECONDS)
    if _job is job:  # not ended meanwhile by a second SIGTERM
        _job = None
        _finish(signum, frame)


def _inside_client(frame: FrameType | None) -> bool:
    """Whether the interrupted thread is running code of this package: only then can it hold
    one of the client's locks."""
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if isinstance(name, str) and name.partition(".")[0] == _PACKAGE:
            return True
        frame = frame.f_back
    return False


def _finish(signum: int, frame: FrameType | None) -> None:
    """What SIGTERM would have done without us: the application's handler, or death."""
    previous = _previous
    if previous is not None:
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # exit status -SIGTERM, no atexit, as before


def _flush_all(seconds: float) -> None:
    """Flush every live client that asked for it, all within ``seconds``; log what is lost."""
    deadline = time.monotonic() + seconds
    clients = [c for w in tuple(_clients) if w.sigterm and (c := w.ref()) is not None]
    for client in clients:
        client.flush(0.0)  # wakes its flusher: all of them write at once
    flushed = 0
    for client in clients:
        if client.flush(max(0.0, deadline - time.monotonic())):
            flushed += 1
            continue
        stats = client.stats()
        log.error(
            "metrics: SIGTERM: Redis did not take everything within %.1f s: %d recorded events "
            "not in Redis are lost (%d dropped in all by this process)",
            seconds,
            stats["accepted"] - stats["settled"],
            stats["dropped"],
        )
    log.info("metrics: SIGTERM: %d of %d clients flushed to Redis", flushed, len(clients))


# -- multiprocessing children ----------------------------------------------------------------


def _watch_child_exit(client: Flushable) -> None:
    """Arm ``_close_at_child_exit`` in multiprocessing children: via ``register_after_fork``
    (run by every child's bootstrap, after it cleared the finalizers it inherited), and at once
    when constructed inside a child's ``run()``. Without multiprocessing loaded there is no
    child yet; ``_after_fork_in_child`` registers then."""
    if "multiprocessing.util" not in sys.modules:
        return
    from multiprocessing import parent_process, util

    util.register_after_fork(client, _close_at_child_exit)
    if parent_process() is not None:
        _close_at_child_exit(client)


def _close_at_child_exit(client: Flushable) -> None:
    """Close ``client`` when this multiprocessing child's ``run()`` ends, before os._exit()."""
    if client in _armed:
        return
    _armed.add(client)
    from multiprocessing import util

    # Weakly: like the atexit hook, this closes the client only if the process still holds it.
    util.Finalize(client, _close, args=(weakref.ref(client),), exitpriority=0)


def _close(ref: weakref.ref[Flushable]) -> None:
    client = ref()
    if client is not None:
        client.close()


def _after_fork_in_child() -> None:
    """A forked child: its own state. The handler, ``_installed`` and which clients ask for
    SIGTERM handling are inherited as they are (the child puts the handler back when its own
    last client closes); the clients are the same objects, which reset themselves for it."""
    global _job, _clients_lock
    _job = None  # a flush under way in the parent is not this process's
    _clients_lock = threading.Lock()  # another thread may have held it while forking
    _armed.clear()
    if "multiprocessing.util" in sys.modules:  # maybe multiprocessing's fork: its bootstrap arms
        from multiprocessing import util

        for watched in tuple(_clients):
            client = watched.ref()
            if client is not None:
                util.register_after_fork(client, _close_at_child_exit)


os.register_at_fork(after_in_child=_after_fork_in_child)
