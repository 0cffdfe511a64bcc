"""Least privilege in Redis (docs: Access, "Redis users by role"): the worker, the aggregator,
the operator and the reader each run as a Redis ACL user of their own, on a real redis-server
started from the committed ``deploy/redis/users.acl`` by ``deploy/redis/start.sh`` (what the
compose ACL variant runs), never the shared Redis on 6379.

What is shown: a MetricsClient under ``worker`` records, flushes (window, totals, registry,
backend metrics with a gauge), answers ``allow()`` and takes a half-open permit; ``python -m
aggregator`` under ``aggregator`` runs cycles, opens the breaker, leads and serves /metrics;
``breaker open|close|reset`` run under ``operator``; ``inspect`` and ``breaker status`` under
``reader`` change nothing; Redis refused none of it (ACL LOG empty). Then what each role is
refused, every refusal a NOPERM that Redis counts (ACL LOG, ``errorstat_NOPERM``): the worker
cannot write a breaker, its transitions or the leader's keys, delete or trim a window, or run
FLUSHALL/KEYS/CONFIG; not even through a script of its own; the reader writes nothing; the
operator writes no window or totals. The docs' ``ACL SETUSER`` lines make the same users as
the file; on a 3-master Redis Cluster (those lines on every node) the worker and the aggregator
meet no refusal either (Sentinel is not run). The control at the end runs the same worker
attack on a Redis with one shared password, as the compose demo has: accepted.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from aggregator.engine.writer import StateWriter
from client import ClientSettings, MetricsClient
from devtools.processes import stop_process
from devtools.redis_acl import (
    ADMIN,
    ROLES,
    WORKER,
    key_patterns,
    render_acl_file,
    role_rules,
    setuser_lines,
    with_passwords,
)
from devtools.redis_cluster import start_cluster
from devtools.redis_server import free_port, start_redis
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.leader_scripts import TOKEN_JUMP
from gatewayz_protocol.partitions import FAILURE, window_partition
from tests.support.backends import open_redis
from tests.support.processes import need_tool, wait_for

ROOT = Path(__file__).resolve().parents[1]
ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"
START = ROOT / "deploy" / "redis" / "start.sh"
NS = "gatewayz"
KEYS = Keys(NS)
PASSWORDS = {
    ADMIN: "adm-4f1e9c2b7d",
    "worker": "wrk-8a3d5e1f0c",
    "aggregator": "agg-2b7c9e4d1a",
    "operator": "opr-6e0f3a8b5d",
    "reader": "rdr-1c4a7f2e9b",
}
ENV_OF = {
    ADMIN: "REDIS_PASSWORD",
    "worker": "REDIS_WORKER_PASSWORD",
    "aggregator": "REDIS_AGGREGATOR_PASSWORD",
    "operator": "REDIS_OPERATOR_PASSWORD",
    "reader": "REDIS_READER_PASSWORD",
}
PROTECTED = (
    "breaker",
    "transitions",
    "model breaker",
    "model transitions",
    "history",
    "lease",
    "token",
    "cycle",
    "snapshot",
)
"""Key kinds only the aggregator (and, for a breaker's own keys, the operator) may write."""


# -- the rules as text: committed file, docs page, patterns ---------------------------------------


def test_the_committed_acl_file_and_the_documented_lines_are_the_generators() -> None:
    assert ACL_FILE.read_text() == render_acl_file(NS), (
        "deploy/redis/users.acl differs: python -m devtools.redis_acl > deploy/redis/users.acl"
    )
    access = (ROOT / "docs" / "operations" / "access.md").read_text()
    for line in setuser_lines(NS):
        assert line in access, f"docs/operations/access.md lacks: {line[:80]}..."
    for role in (*ROLES, ADMIN):
        assert f"`{role}`" in access


def _sample_keys(namespace: str) -> list[tuple[str, str]]:
    """(key, the kind Keys.kind names) for every key format, for providers whose names clash
    with the fixed tags, and for a shard."""
    keys = Keys(namespace)
    found: list[str] = []
    for provider in ("openrouter", "shared", "leader", "metrics", "fireworks.ai", "a_b-c"):
        found += keys.provider_keys(provider, shards=3)
        found += [keys.history(provider), keys.applied(keys.totals(provider, 2))]
        for model in ("openai/gpt-4o", "a:b}{*?[x]", "breaker"):  # model breakers
            found += [keys.models(provider), *keys.model_window_keys(provider, model)]
            found += [keys.model_breaker(provider, model), keys.model_permits(provider, model)]
            found.append(keys.model_transitions(provider, model))
    found += [keys.providers, keys.shards, keys.event_ids, keys.client_stats, keys.redis_ops]
    found += [keys.clock_offsets, keys.leader_lease, keys.leader_token, keys.snapshot_cycle]
    found += [keys.snapshot, keys.metric_schema, keys.gauge_writers, keys.applied(keys.providers)]
    for name in ("requests_total", "a:b_c"):
        found += [keys.metric_series(name), keys.metric_data(name), keys.metric_exemplars(name)]
    found.append(keys.gauge_values("Xy_9-ab"))
    leader = {keys.leader_lease: "lease", keys.leader_token: "token"}
    leader |= {keys.snapshot_cycle: "cycle", keys.snapshot: "snapshot"}
    return [(key, leader.get(key) or keys.kind(key)) for key in found]


@pytest.mark.parametrize("namespace", [NS, "acme.prod-1"])
def test_each_key_kind_has_one_pattern_and_it_matches_that_kind_only(namespace: str) -> None:
    patterns = key_patterns(namespace)
    for key, kind in _sample_keys(namespace):
        matching = [k for k, pattern in patterns.items() if fnmatch.fnmatchcase(key, pattern)]
        assert matching == [kind], (key, matching)
    assert all(pattern.startswith(f"{namespace}:") for pattern in patterns.values())
    if namespace != NS:
        assert NS not in render_acl_file(namespace)


def test_no_worker_grant_writes_what_only_the_aggregator_and_operators_change() -> None:
    protected = [key for key, kind in _sample_keys(NS) if kind in PROTECTED]
    patterns = key_patterns(NS)
    for grant in WORKER.grants:
        touches = [
            key
            for key in protected
            for kind in grant.kinds
            if fnmatch.fnmatchcase(key, patterns[kind])
        ]
        # the breaker is read (HGET, HMGET), or named by the PERMIT call, whose commands are
        # each checked against the worker's own rights
        assert not touches or grant.read_only or grant.commands == ("evalsha",), grant
    rules = " ".join(role_rules(WORKER, NS))
    for forbidden in ("+@all", "+unlink", "+flushall", "+flushdb", "+keys", "+config", "+eval "):
        assert forbidden not in rules + " "
    for role in ("worker", "operator", "reader"):
        assert "+@all" not in render_acl_file(NS).split(f"user {role} ")[1].split("\n")[0]


# -- a redis-server with the users ----------------------------------------------------------------


@dataclass
class AclServer:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, user: str) -> str:
        return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis(port=self.port, username=user, password=PASSWORDS[user])


def _start_with_users(workdir: Path) -> AclServer:
    """``deploy/redis/start.sh`` as the compose ACL variant runs it (the committed users.acl,
    the passwords from the environment), on a free local port."""
    need_tool("redis-server", "apt-get install redis-server")
    need_tool("sha256sum", "apt-get install coreutils")
    port = free_port()
    env = {name: PASSWORDS[user] for user, name in ENV_OF.items()}
    env |= {"PATH": os.environ["PATH"], "REDIS_ACL_TEMPLATE": str(ACL_FILE)}
    env["REDIS_ACL_FILE"] = str(workdir / "users.acl")
    log = workdir / "redis.log"
    flags = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    flags += ["--dir", str(workdir), "--logfile", str(log)]
    process = subprocess.Popen(["sh", str(START), *flags], env=env, start_new_session=True)
    server = AclServer(port, process, log)
    admin = server.client(ADMIN)

    def answers() -> bool:
        try:
            return bool(admin.ping())
        except redis.ConnectionError:  # not listening yet
            return False

    try:
        wait_for(lambda: process.poll() is None and answers(), timeout=15)
    except (AssertionError, redis.RedisError):
        stop_process(process)
        raise AssertionError(f"redis-server with users.acl did not start: {_tail(log)}") from None
    finally:
        admin.close()
    return server


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    server = _start_with_users(tmp_path_factory.mktemp("acl-redis"))
    yield server
    stop_process(server.process)


def _rendered_file_holds_no_password(server: AclServer) -> None:
    text = (server.log.parent / "users.acl").read_text()
    assert text == with_passwords(ACL_FILE.read_text(), PASSWORDS)
    assert not any(password in text for password in PASSWORDS.values())
    assert (server.log.parent / "users.acl").stat().st_mode & 0o077 == 0


def _noperm_count(admin: redis.Redis) -> int:
    return int(admin.info("errorstats").get("errorstat_NOPERM", {}).get("count", 0))


def _client(url: str) -> MetricsClient:
    settings = ClientSettings(
        redis_url=url,
        namespace=NS,
        socket_timeout_seconds=1.0,
        backoff_initial_seconds=0.02,
        backoff_max_seconds=0.2,
        gauge_ttl_seconds=600.0,  # nothing expires while the reader's no-change check runs
        handle_sigterm=False,
    )
    return MetricsClient(settings=settings)


def _cli(server: AclServer, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m aggregator ARGS`` under ``user``, its URL in a file (--redis-url-file)."""
    url_file = server.log.parent / f"{user}.url"
    url_file.write_text(server.url(user) + "\n")
    url_file.chmod(0o600)
    command = [sys.executable, "-m", "aggregator", *args, "--redis-url-file", str(url_file)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)


def _everything(admin: redis.Redis) -> dict[bytes, Any]:
    return {key: admin.dump(key) for key in admin.scan_iter(count=1000)}


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


def _start_aggregator(
    url: str, http_port: int, workdir: Path, *flags: str
) -> subprocess.Popen[bytes]:
    """``python -m aggregator`` under the user of ``url`` (given in a file: --redis-url-file),
    fast cycles; its stderr in ``workdir/aggregator.log``."""
    url_file = workdir / "aggregator.url"
    url_file.write_text(url)
    command = [sys.executable, "-m", "aggregator", "--redis-url-file", str(url_file)]
    command += ["--namespace", NS, "--port", str(http_port), "--interval", "0.5"]
    command += ["--breaker-interval", "0.5", *flags]
    with (workdir / "aggregator.log").open("wb") as stderr:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)


def _until(
    condition: Callable[[], bool], aggregator: subprocess.Popen[bytes], workdir: Path
) -> None:
    """``wait_for(condition)`` while ``aggregator`` runs; a failure shows its log."""
    try:
        wait_for(lambda: aggregator.poll() is None and condition(), timeout=30)
    except AssertionError:
        log = _tail(workdir / "aggregator.log")
        raise AssertionError(f"aggregator (exit {aggregator.poll()}): {log}") from None


def _fail_key(provider: str) -> str:
    return KEYS.window_keys(provider)[window_partition(FAILURE, 0)]


def test_every_process_runs_under_its_role_and_redis_refuses_none_of_it(
    acl_server: AclServer,
) -> None:
    _rendered_file_holds_no_password(acl_server)
    admin = acl_server.client(ADMIN)
    admin.acl_log_reset()
    noperm = _noperm_count(admin)
    worker, trial, aggregator = _client(acl_server.url("worker")), None, None
    http_port = free_port()
    try:
        # the worker: every kind of write lands
        depth = worker.gauge("acl_queue_depth", "Jobs waiting", ["queue"], combine="max")
        retries = worker.counter("acl_retries_total", "Retries", ["provider"])
        depth.labels("jobs").set(3)
        retries.labels("flaky").inc(2)
        for _ in range(30):
            worker.record("flaky", 0.1, status_code=503)
        for _ in range(10):
            worker.record("steady", 0.2, status_code=200, tokens=7, cost_usd=0.001)
        assert worker.flush(timeout=5)
        assert worker.allow("flaky") is True  # closed: no permit needed
        assert admin.zcard(_fail_key("flaky")) == 30
        assert admin.hget(KEYS.totals("flaky"), "n:failure") == b"30"
        assert admin.hget(KEYS.totals("steady"), "tokens") == b"70"
        assert {m for m, _ in admin.zrange(KEYS.providers, 0, -1, withscores=True)} >= {
            b"flaky",
            b"steady",
        }
        assert admin.hexists(KEYS.metric_schema, "acl_queue_depth")
        assert admin.hexists(KEYS.metric_schema, "acl_retries")  # a counter: no _total
        assert admin.zcard(KEYS.gauge_writers) == 1
        (writer,) = admin.zrange(KEYS.gauge_writers, 0, -1)
        gauges = admin.hgetall(KEYS.gauge_values(writer.decode()))
        assert len(gauges) == 2 and gauges[b"~max_series"] == b"1000"  # a value, the cap
        assert int(admin.hget(KEYS.redis_ops, "zadd") or 0) > 0

        # the aggregator: cycles, leads, opens the breaker, then half-open; serves /metrics
        workdir = acl_server.log.parent
        aggregator = _start_aggregator(
            acl_server.url("aggregator"), http_port, workdir, "--breaker-open-seconds", "1"
        )
        breaker = KEYS.breaker("flaky")
        _until(lambda: admin.hget(breaker, "state") == b"half_open", aggregator, workdir)
        assert admin.hgetall(KEYS.transitions("flaky")) == {
            b"closed>open": b"1",
            b"open>half_open": b"1",
        }
        half_open = 'gatewayz_circuit_breaker_state{provider="flaky",state="half_open"} 1.0'
        _until(lambda: half_open in _get(http_port, "/metrics"), aggregator, workdir)
        body = _get(http_port, "/metrics")
        assert 'acl_queue_depth{queue="jobs"} 3.0' in body
        assert 'acl_retries_total{provider="flaky"} 2.0' in body
        assert 'gatewayz_provider_window_requests{provider="steady"} 10.0' in body
        assert admin.get(KEYS.leader_lease) is not None and admin.get(KEYS.snapshot) is not None

        # a worker that meets the half-open breaker takes a trial permit
        trial = _client(acl_server.url("worker"))
        assert trial.allow("flaky") is True
        assert admin.zcard(KEYS.permits("flaky")) == 1

        # the operator forces, releases and resets the breaker (each transition ends permits)
        for action, state, forced in (("open", b"open", b"1"), ("close", b"closed", b"1")):
            result = _cli(acl_server, "operator", "breaker", action, "flaky")
            assert result.returncode == 0, result.stderr
            assert admin.hmget(breaker, "state", "forced") == [state, forced]
            assert admin.exists(KEYS.permits("flaky")) == 0
        result = _cli(acl_server, "operator", "breaker", "reset", "flaky")
        assert result.returncode == 0, result.stderr
        assert admin.hmget(breaker, "state", "forced") == [b"closed", b"0"]
        assert admin.hget(KEYS.transitions("flaky"), "closed>open") == b"1"
    finally:
        for client in (worker, trial):
            if client is not None:
                client.close(timeout=5)
        if aggregator is not None:
            stop_process(aggregator)  # SIGTERM: it releases the lease (RELEASE, as aggregator)
    assert admin.get(KEYS.leader_lease) is None
    wait_for(lambda: not admin.exists(KEYS.snapshot), timeout=5)  # published with a 1.5 s TTL

    # the reader: inspect and breaker status show the state and change nothing
    before = _everything(admin)
    for args, shown in (
        (("inspect",), "flaky"),
        (("inspect", "flaky", "--json"), '"provider": "flaky"'),
        (("breaker", "status"), '"provider": "steady"'),
        (("breaker", "status", "flaky"), '"state": "closed"'),
    ):
        result = _cli(acl_server, "reader", *args)
        assert result.returncode == 0, (args, result.stderr)
        assert shown in result.stdout, (args, result.stdout[:500])
    assert _everything(admin) == before

    # nothing of all that was refused: no ACL LOG entry, no NOPERM counted
    assert admin.acl_log() == [], admin.acl_log()
    assert _noperm_count(admin) == noperm
    admin.close()


def _refused(call: Callable[[], object]) -> str:
    """``call`` is refused by Redis's ACL (NOPERM); returns the message."""
    with pytest.raises(redis.exceptions.NoPermissionError) as refusal:
        call()
    return str(refusal.value)


def _refused_in_script(call: Callable[[], object]) -> None:
    """A command a Lua script runs is checked against the calling user, keys included: refused,
    failing the script (Redis 7.0: "The user executing the script can't run this command" or
    "can't access at least one of the keys"; later versions may say NOPERM)."""
    with pytest.raises(redis.ResponseError, match=r"(?i)script can't (run|access)|no permissions"):
        call()


def _victim(admin: redis.Redis) -> dict[str, bytes | None]:
    """A provider whose keys the refusals aim at, written by the admin; returns what must not
    change (the keys' dumps, the lease)."""
    breaker = KEYS.breaker("victim")
    admin.hset(breaker, mapping={"state": "closed", "epoch": "4", "forced": "0", "fence": "2"})
    admin.hset(KEYS.transitions("victim"), "closed>open", 3)
    admin.zadd(_fail_key("victim"), {"AAAAAA": time.time(), "AAAAAB": time.time()})
    admin.hset(KEYS.totals("victim"), "n:failure", 2)
    admin.zadd(KEYS.history("victim"), {"1|0.9|0.1": 60})
    admin.set(KEYS.leader_lease, "aggregator-1|2", px=60_000)
    return {
        "breaker": admin.dump(breaker),
        "transitions": admin.dump(KEYS.transitions("victim")),
        "window": admin.dump(_fail_key("victim")),
        "totals": admin.dump(KEYS.totals("victim")),
        "lease": admin.get(KEYS.leader_lease),
    }


def test_what_each_role_is_refused(acl_server: AclServer) -> None:
    admin = acl_server.client(ADMIN)
    admin.acl_log_reset()
    noperm = _noperm_count(admin)
    state = _victim(admin)
    breaker, window = KEYS.breaker("victim"), _fail_key("victim")
    refusals: dict[str, list[str]] = {role: [] for role in ROLES}

    def refuse(role: str, client: redis.Redis, *command: Any) -> None:
        refusals[role].append(_refused(lambda: client.execute_command(*command)))

    # the worker steers no breaker, rewrites no window it may only add to, administers nothing
    worker = acl_server.client("worker")
    for command in (
        ("HSET", breaker, "state", "open", "forced", "1"),
        ("HDEL", breaker, "fence"),
        ("DEL", breaker),
        ("EXPIRE", breaker, 0),
        ("HINCRBY", KEYS.transitions("victim"), "closed>open", 1),
        ("ZADD", KEYS.history("victim"), 120, "2|0.0|1.0"),
        ("SET", KEYS.leader_lease, "worker|99"),
        ("DEL", KEYS.leader_lease),
        ("INCR", KEYS.leader_token),
        ("SET", KEYS.snapshot, "{}"),
        ("DEL", window),
        ("UNLINK", window),
        ("ZREMRANGEBYSCORE", window, "-inf", "+inf"),
        ("ZREM", window, "AAAAAA"),
        ("SET", window, "x"),
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "*"),
        ("SCRIPT", "FLUSH"),
        ("EVAL", "return 1", 0),
        ("SHUTDOWN", "NOSAVE"),
    ):
        refuse("worker", worker, *command)
    # nor through a script of its own: every command a script runs is the caller's
    forge = worker.script_load("return redis.call('HSET', KEYS[1], 'state', 'open')")
    _refused_in_script(lambda: worker.evalsha(forge, 2, breaker, KEYS.permits("victim")))
    wipe = worker.script_load("return redis.call('DEL', KEYS[1])")
    _refused_in_script(lambda: worker.evalsha(wipe, 1, KEYS.permits("victim")))
    # nor with the project's own breaker command
    forced = _cli(acl_server, "worker", "breaker", "open", "victim", "--create")
    assert forced.returncode == 1 and "NoPermissionError" in forced.stderr, forced.stderr

    # the reader writes nothing, runs no script
    reader = acl_server.client("reader")
    for command in (
        ("HSET", breaker, "state", "open"),
        ("ZADD", window, time.time(), "ZZZZZZ"),
        ("HINCRBY", KEYS.totals("victim"), "n:failure", 1),
        ("ZADD", KEYS.providers, time.time(), "victim"),
        ("DEL", window),
        ("EXPIRE", window, 0),
        ("SET", KEYS.leader_lease, "reader|99"),
        ("SCRIPT", "LOAD", "return 1"),
        ("EVALSHA", forge, 1, breaker),
        ("FLUSHALL",),
        ("KEYS", "*"),
    ):
        refuse("reader", reader, *command)
    opened = _cli(acl_server, "reader", "breaker", "open", "victim", "--create")
    assert opened.returncode == 1 and "NoPermissionError" in opened.stderr, opened.stderr

    # the operator changes breakers, never the windows, counters or the leader's keys
    operator = acl_server.client("operator")
    for command in (
        ("ZADD", window, time.time(), "ZZZZZZ"),
        ("ZREMRANGEBYSCORE", window, "-inf", "+inf"),
        ("DEL", window),
        ("HINCRBY", KEYS.totals("victim"), "n:failure", 1),
        ("HSET", KEYS.totals("victim"), "n:failure", 0),
        ("ZADD", KEYS.history("victim"), 120, "2|0.0|1.0"),
        ("SET", KEYS.leader_lease, "operator|99"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "GET", "*"),
    ):
        refuse("operator", operator, *command)

    # the aggregator keeps to its namespace and deletes only what its scripts delete
    aggregator = acl_server.client("aggregator")
    for command in (
        ("DEL", window),
        ("SET", "other-app:config", "x"),
        ("GET", "other-app:config"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("CONFIG", "SET", "maxmemory-policy", "allkeys-lru"),
        ("ACL", "SETUSER", "worker", "+@all"),
        ("SHUTDOWN", "NOSAVE"),
    ):
        refuse("aggregator", aggregator, *command)

    # nothing changed, and Redis counted every refusal where an operator looks
    assert state == {
        "breaker": admin.dump(breaker),
        "transitions": admin.dump(KEYS.transitions("victim")),
        "window": admin.dump(window),
        "totals": admin.dump(KEYS.totals("victim")),
        "lease": admin.get(KEYS.leader_lease),
    }
    assert admin.hget(breaker, "state") == b"closed"

    # what a worker can still do (docs, Access: "What a worker's credentials can still do"):
    # delete a key it must expire, fill a breaker's half-open permits
    exposed = _fail_key("exposed")
    admin.zadd(exposed, {"AAAAAC": time.time()})
    assert worker.expire(exposed, 0) and not admin.exists(exposed)
    assert worker.zadd(KEYS.permits("exposed"), {f"h{i}": 2**42 for i in range(10)}) == 10
    refused = sum(map(len, refusals.values()))
    assert _noperm_count(admin) >= noperm + refused
    logged = {entry["username"] for entry in admin.acl_log(count=128)}
    assert logged >= set(ROLES), logged
    for client in (admin, worker, reader, operator, aggregator):
        client.close()


def test_the_documented_lines_set_the_users_the_file_sets(acl_server: AclServer) -> None:
    """The ``ACL SETUSER`` lines (the docs' Access page), fed to redis-cli as the admin, leave every
    user exactly as the ACL file made it."""
    need_tool("redis-cli", "apt-get install redis-server")
    admin = acl_server.client(ADMIN)
    before = admin.acl_list()
    _setusers(acl_server.port, PASSWORDS[ADMIN])
    assert _rights(admin.acl_list()) == _rights(before)
    admin.close()


def _rights(acl_list: list[str]) -> dict[str, tuple[frozenset[str], frozenset[frozenset[str]]]]:
    """``ACL LIST`` by user: its root rules and its selectors, each as a set of rules (Redis
    keeps rules in the order they were given, and SETUSER's ``reset`` adds sanitize-payload)."""
    rights = {}
    for line in acl_list:
        selectors = frozenset(frozenset(s.split()) for s in re.findall(r"\(([^)]*)\)", line))
        root = re.sub(r"\([^)]*\)", " ", line).split()
        rights[root[1]] = (frozenset(root[2:]) - {"sanitize-payload"}, selectors)
    return rights


def _setusers(port: int, admin_password: str | None = None) -> None:
    """The documented ``ACL SETUSER`` lines, with the test's passwords, through redis-cli (as
    ``admin``, or as the default user of a server without users)."""
    lines = "\n".join(setuser_lines(NS))
    for role in ROLES:
        lines = lines.replace(f">{role.upper()}_PASSWORD ", f">{PASSWORDS[role]} ")
    env = {"PATH": os.environ["PATH"]}
    command = ["redis-cli", "-p", str(port)]
    if admin_password is not None:
        command += ["--user", ADMIN]
        env["REDISCLI_AUTH"] = admin_password
    result = subprocess.run(
        command, input=lines + "\n", env=env, capture_output=True, text=True, timeout=10
    )
    assert result.stdout.split() == ["OK"] * len(ROLES), result.stdout + result.stderr


def test_on_a_redis_cluster_the_worker_and_the_aggregator_need_nothing_more(
    tmp_path: Path,
) -> None:
    """The same users on every node of a 3-master cluster (the lines through redis-cli): a
    flush over several slots (one MULTI/EXEC per slot, with its applied marker), a gauge, a
    half-open permit, and the aggregator's cycles (CLUSTER SLOTS, COMMAND, INFO of every
    master) meet no refusal on any node."""
    need_tool("redis-cli", "apt-get install redis-server")
    cluster = start_cluster(masters=3)
    aggregator = None
    try:
        for node in cluster.nodes:
            _setusers(node.port)
        seeds = cluster.url.removeprefix("redis+cluster://")

        def url(user: str) -> str:
            return f"redis+cluster://{user}:{PASSWORDS[user]}@{seeds}"

        admin = open_redis(cluster.url)  # the default user: this test's own cluster
        providers = [f"p{i}" for i in range(8)]
        admin.hset(KEYS.breaker("p0"), mapping={"state": "half_open", "epoch": "2"})
        worker = _client(url("worker"))
        try:
            worker.gauge("acl_queue_depth", "Jobs waiting", ["queue"]).labels("jobs").set(1)
            for provider in providers:
                worker.record(provider, 0.2, status_code=200)
            assert worker.flush(timeout=10)
            assert worker.allow("p0") is True  # a half-open permit, on p0's node
        finally:
            worker.close(timeout=5)
        assert admin.zcard(KEYS.permits("p0")) == 1
        assert all(admin.hget(KEYS.totals(p), "n:success") == b"1" for p in providers)
        assert admin.hlen(KEYS.applied(KEYS.totals("p0"))) >= 1  # the slot's applied marker
        http_port = free_port()
        aggregator = _start_aggregator(url("aggregator"), http_port, tmp_path)
        served = 'gatewayz_provider_window_requests{provider="p7"} 1.0'
        _until(lambda: served in _get(http_port, "/metrics"), aggregator, tmp_path)
        ready = '{"ready":true'
        _until(lambda: _get(http_port, "/readyz").startswith(ready), aggregator, tmp_path)
        admin.close()
    finally:
        if aggregator is not None:
            stop_process(aggregator)
        refused = []
        for node in cluster.nodes:
            connection = redis.Redis(port=node.port)
            refused += connection.acl_log()
            connection.close()
        cluster.stop()
    assert refused == [], refused


def test_without_the_users_a_worker_password_forces_a_breaker() -> None:
    """The control, the deployment before the users: one password for every process (compose's
    requirepass). The same HSET a worker is refused above is accepted here, so the refusals above
    come from the users and nothing else."""
    need_tool("redis-server", "apt-get install redis-server")
    server = start_redis()
    try:
        plain = redis.Redis(port=server.port)
        assert plain.config_set("requirepass", PASSWORDS["worker"])
        plain.close()
        worker = redis.Redis.from_url(f"redis://:{PASSWORDS['worker']}@127.0.0.1:{server.port}/0")
        assert worker.hset(KEYS.breaker("victim"), mapping={"state": "open", "forced": "1"}) == 2
        assert worker.hget(KEYS.breaker("victim"), "forced") == b"1"
        assert worker.delete(KEYS.breaker("victim")) == 1
        assert worker.execute_command("FLUSHALL")
        worker.close()
    finally:
        server.stop()


def test_the_aggregator_may_take_a_new_token_above_the_fences(acl_server: AclServer) -> None:
    # The lease script's jump past a refused token (the token counter lost with its slot's
    # data) runs under the aggregator's rights: GET and SET on the counter, no INCRBY.
    admin = acl_server.client(ADMIN)
    admin.delete(KEYS.leader_lease)  # an earlier test's aggregator may still hold it
    admin.close()
    aggregator = acl_server.client("aggregator")
    writer = StateWriter(aggregator, KEYS, retention_seconds=3600)
    try:
        token, _ = writer.hold_lease("acl-a", ttl_seconds=60)
        again, _ = writer.hold_lease("acl-a", ttl_seconds=60, refused=token)
        assert again == token + TOKEN_JUMP + 1
    finally:
        writer.release_lease("acl-a")
        aggregator.close()
