"""Foreign data (poisoned fields beside the real ones, a snapshot from a 'newer' leader) and
operator commands run in the middle of the faults."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devtools.torture import tampering
from devtools.torture.deployment import ROOT, plain_redis
from devtools.torture.faults import Apply, FaultRecord, Targets
from devtools.torture.schedule import Fault
from gatewayz_transport.connection import connect


class DataFaults:
    """Writes another writer could make: nothing here changes a real field or event."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets

    def handlers(self) -> Mapping[str, Apply]:
        return {"poison": self.poison, "newer_snapshot": self.newer_snapshot}

    def poison(self, fault: Fault, record: FaultRecord) -> None:
        dep, keys = self.targets.dep, self.targets.keys
        provider = self.targets.provider(fault)
        cluster = dep.cluster is not None
        commands = tampering.poison_commands(keys, provider, int(fault.params["variant"]), cluster)
        connection = connect(dep.direct_url, 5.0)
        try:
            record.notes["errors"] = tampering.poison(connection, commands)
        finally:
            connection.close()
        record.notes["written"] = [repr(c[:3]) for c in commands]

    def newer_snapshot(self, fault: Fault, record: FaultRecord) -> None:
        dep = self.targets.dep
        connection = connect(dep.direct_url, 5.0)
        try:
            node = tampering.leader_node(
                connection,
                self.targets.keys,
                lambda: plain_redis(dep.redis.port),  # type: ignore[union-attr]
            )
            record.notes.update(tampering.publish_newer(node, self.targets.keys))
            node.close()
        finally:
            connection.close()


@dataclass
class OperatorRun:
    action: str
    provider: str | None
    argv: list[str]
    start: float
    end: float = 0.0
    returncode: int | None = None
    output: str = ""
    sent: list[list[str]] = field(default_factory=list)


class OperatorFaults:
    """``inspect`` and ``breaker status|open|close|reset`` run as an operator's shell would, each
    in a thread of its own, every command it sends logged (``opcmd``) into ``runs``;
    ``restore()`` waits for the commands still running."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self.runs: list[OperatorRun] = []
        self._threads: list[threading.Thread] = []

    def handlers(self) -> Mapping[str, Apply]:
        return {"operator": self.operator}

    def operator(self, fault: Fault, record: FaultRecord) -> None:
        dep = self.targets.dep
        action, detail = str(fault.params["action"]), bool(fault.params["detail"])
        provider = self.targets.provider(fault)
        if action == "inspect":
            argv = ["inspect", *([provider] if detail else [])]
        elif action == "status":
            argv = ["breaker", "status", *([provider] if detail else [])]
        else:
            argv = ["breaker", action, provider, "--create"]
        argv += ["--redis-url", dep.direct_url, "--namespace", dep.namespace]
        named = provider if action not in ("inspect", "status") or detail else None
        run = OperatorRun(action, named, argv, time.time())
        self.runs.append(run)
        record.notes["provider"] = named
        thread = threading.Thread(target=self._operate, args=(run, len(self.runs)))
        thread.start()
        self._threads.append(thread)

    def _operate(self, run: OperatorRun, number: int) -> None:
        log = Path(self.targets.dep.directory) / f"operator-{number}.json"
        command = [sys.executable, "-m", "devtools.torture.opcmd", str(log), "--", *run.argv]
        run.start = time.time()
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
            run.returncode, run.output = done.returncode, (done.stdout + done.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            run.output = "timed out"
        run.end = time.time()
        try:
            run.sent = json.loads(log.read_text())
        except (OSError, ValueError):
            run.sent = [["UNLOGGED"]]

    def restore(self) -> None:
        for thread in self._threads:
            thread.join(60)
