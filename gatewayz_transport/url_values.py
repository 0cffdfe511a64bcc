"""The values of a Redis URL's query options (``?socket_timeout=2&client_name=gw``), checked
when the settings are built: each option ``gatewayz_transport.urls`` lets through by name must
also have a value a connection can use.

redis-py reads most of them with ``int()``, ``float()`` or its own ``to_bool`` and passes the
rest on as text, without looking further: ``?socket_timeout=-1`` or ``nan``, ``?protocol=9``,
``?client_name=a b`` (Redis refuses names with spaces), ``?ssl_cert_reqs=bogus`` or a db beyond
what Redis can select were taken, then every connection failed, in the client's flusher (its
``flush()`` False forever) and in every cycle of the aggregator. Here each is refused in one
line naming the option, what it takes and the value given (never a password's: those are not
checked here, and their values never quoted).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Collection
from urllib.parse import parse_qs

Check = Callable[[str], "str | None"]
"""A value's problem (``must be ...``), or None when it is fine."""

DB_MAX = 2**31 - 2
"""The highest db a Redis can select (its ``databases`` setting goes up to 2^31 - 1)."""


def _number(low: float, high: float, whole: bool = False, unit: str = "") -> Check:
    """A number from ``low`` to ``high`` (a whole one if ``whole``), as redis-py reads it."""
    kind = "a whole number" if whole else "a number"
    told = f"must be {kind} from {_shown(low)} to {_shown(high)}{unit}"

    def check(raw: str) -> str | None:
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            return told
        return None if low <= value <= high else told  # nan: neither

    return check


def _shown(bound: float) -> str:
    """``2147483646``, ``0.01``: never ``2.14748e+09``."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


_DB_TEXT = (
    f"must be a whole number from 0 to {DB_MAX} (a Redis has dbs 0 to 15 unless its "
    f"databases setting says more)"
)


def _db(raw: str) -> str | None:
    try:
        return None if 0 <= int(raw) <= DB_MAX else _DB_TEXT
    except ValueError:
        return _DB_TEXT


_BOOLEAN_WORDS = ("0", "1", "false", "true", "no", "yes", "off", "on", "f", "t", "n", "y")


def _boolean(raw: str) -> str | None:
    # redis-py reads every text but its false words as true: "flase" would be on
    if raw.strip().lower() in _BOOLEAN_WORDS:
        return None
    return "must be true or false (1/0, yes/no, on/off)"


def _one_of(*allowed: str) -> Check:
    def check(raw: str) -> str | None:
        return None if raw in allowed else f"must be one of {', '.join(allowed)}"

    return check


def _protocol(raw: str) -> str | None:
    try:
        return None if int(raw) in (2, 3) else "must be 2 or 3 (RESP2, RESP3)"
    except ValueError:
        return "must be 2 or 3 (RESP2, RESP3)"


def _name(raw: str) -> str | None:
    # CLIENT SETNAME refuses a name with a space or a character outside visible ASCII
    if all("!" <= c <= "~" for c in raw):
        return None
    return "must be one word of visible ASCII characters (no spaces)"


_TLS_VERSIONS = sorted(int(version) for version in ssl.TLSVersion)


def _tls_version(raw: str) -> str | None:
    try:
        if int(raw) in _TLS_VERSIONS:
            return None
    except ValueError:
        pass
    listed = ", ".join(str(version) for version in _TLS_VERSIONS)
    return f"must be an ssl.TLSVersion value ({listed}; 771: TLS 1.2, 772: TLS 1.3)"


def _ciphers(raw: str) -> str | None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(raw)
    except ssl.SSLError:
        return "must be an OpenSSL cipher list that selects a cipher"
    return None


def _any(raw: str) -> str | None:
    return None


_SECONDS = _number(0.01, 300, unit=" (seconds)")

CHECKS: dict[str, Check] = {
    "db": _db,
    "socket_timeout": _SECONDS,
    "socket_connect_timeout": _SECONDS,
    "socket_read_size": _number(1, 1_048_576, whole=True, unit=" (bytes)"),
    # a worker's threads share each pool, which refuses a connection beyond the cap rather
    # than wait for one: at 1 its flusher fails for good ("Too many connections")
    "max_connections": _number(4, 1_000_000, whole=True),
    "health_check_interval": _number(0, 86_400, whole=True, unit=" (seconds)"),
    "protocol": _protocol,
    "socket_keepalive": _boolean,
    "retry_on_timeout": _boolean,
    "legacy_responses": _boolean,
    "client_name": _name,
    "lib_name": _name,
    "lib_version": _name,
    "ssl_cert_reqs": _one_of("none", "optional", "required"),
    "ssl_check_hostname": _boolean,
    "ssl_validate_ocsp": _boolean,
    "ssl_validate_ocsp_stapled": _boolean,
    "ssl_min_version": _tls_version,
    "ssl_ciphers": _ciphers,
    # read by redis-py's own URL parser, which refuses a name it does not know
    "retry_on_error": _any,
    "ssl_include_verify_flags": _any,
    "ssl_exclude_verify_flags": _any,
    # paths, PEM text, a password: text a connection takes as it is
    "ssl_keyfile": _any,
    "ssl_certfile": _any,
    "ssl_ca_certs": _any,
    "ssl_ca_path": _any,
    "ssl_ca_data": _any,
    "ssl_password": _any,
    "ssl_ocsp_expected_cert": _any,
}
"""Every query option a URL may give (the others are refused), and the check of its value."""


def check_values(query: str, names: Collection[str]) -> None:
    """ValueError naming each option of ``query`` whose value no connection can use, in one
    line (``?a= must be ...; ?b= must be ...``), and each of ``names`` (the options redis-py
    took from it) that no value given in a URL can serve (an object, such as
    ``?ssl_ocsp_context=``)."""
    values = {name: given[0] for name, given in parse_qs(query).items() if given}
    problems = []
    for name in sorted(set(names) | set(values) & set(CHECKS)):
        check = CHECKS.get(name)
        if check is None:
            problems.append(f"?{name}= cannot be given in a URL (its value is not text)")
            continue
        problem = check(values[name]) if name in values else None
        if problem is not None:
            problems.append(f"?{name}= {problem}, got {_quoted(values[name])}")
    if problems:
        raise ValueError("; ".join(problems))


def check_db(db: int, what: str = "?db=") -> None:
    """ValueError unless a Redis can select ``db`` (``what`` names where it was given)."""
    if not 0 <= db <= DB_MAX:
        raise ValueError(f"{what} {_DB_TEXT}, got {_quoted(str(db))}")


def _quoted(raw: str, limit: int = 40) -> str:
    """``raw`` as a message quotes it: on one line, cut at ``limit`` characters."""
    text = repr(raw)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
