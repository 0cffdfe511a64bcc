"""Headless Chromium driven over the DevTools protocol, for tests that watch a page over time.

``--dump-dom`` shows one moment; a page that must redraw by itself (no reload) needs a browser
that stays open while the test changes the world. Chromium speaks the DevTools protocol over
a pipe (``--remote-debugging-pipe``: commands in on fd 3, replies out on fd 4, each message
NUL-terminated JSON), so no websocket library and no debugging port are needed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class BrowserError(RuntimeError):
    """The browser answered a command with an error, or not at all."""


class Browser:
    """One headless Chromium with one page; ``close()`` (or ``with``) ends it."""

    def __init__(self, window_size: tuple[int, int] = (1400, 900)) -> None:
        self._profile = tempfile.mkdtemp(prefix="gatewayz-chromium-")
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # fds 3 and 4 are fixed by Chromium. bash places them (dash takes one-digit fds only),
        # not preexec_fn, which is unsafe beside the threads a test may run.
        self._process = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{commands_read} 4>&{replies_write}',
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self._profile}",
                f"--window-size={window_size[0]},{window_size[1]}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(commands_read, replies_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its renderer and GPU helpers: ended with it, as a group
        )
        os.close(commands_read)
        os.close(replies_write)
        self._ids = itertools.count(1)
        self._pending = b""
        try:
            target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
            attached = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})
            self._session: str | None = attached["sessionId"]
            self.send("Page.enable")
            self.send("Runtime.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools command on the page; its result."""
        return self._send(method, params or {}, session=self._session)

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait until the page has loaded (its own scripts may still be fetching)."""
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href === "
                      + json.dumps(url), timeout=timeout)  # fmt: skip

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        return self.wait_until(lambda: self.evaluate(expression), expression, timeout)

    def wait_until(self, probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true after {timeout} s: {what}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        """End Chromium and every helper process it started, then remove its profile (a
        helper still writing there would make the removal fail)."""
        group = self._process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # helpers that outlived the browser
        self._process.wait()
        for fd in (self._commands, self._replies):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def _send(
        self, method: str, params: dict[str, Any], session: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next_message(deadline, method)
            if reply.get("id") != message_id:
                continue  # an event, or the reply to nothing we wait for
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply["result"]
            return result

    def _next_message(self, deadline: float, method: str) -> dict[str, Any]:
        while b"\0" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise BrowserError(f"{method}: no answer from chromium")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise BrowserError(f"{method}: chromium exited ({self._process.poll()})")
            self._pending += chunk
        message, self._pending = self._pending.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed
