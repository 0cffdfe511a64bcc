"""The values of a Redis URL's query options (gatewayz_transport.url_values): each refused in one
line naming the option, what it takes and what was given; what a connection can use taken. Pure:
no connection is made."""

from __future__ import annotations

import pytest
import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection

from gatewayz_transport.url_values import CHECKS, DB_MAX, check_db, check_values
from gatewayz_transport.urls import _FROM_NETLOC, _REFUSED, _TEXT_OPTIONS, _parameters


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("socket_timeout=-1", "?socket_timeout= must be a number from 0.01 to 300 (seconds), "),
        ("socket_timeout=nan", "got 'nan'"),
        ("socket_timeout=0", "got '0'"),  # a non-blocking socket: every read fails
        ("socket_timeout=1e30", "got '1e30'"),  # settimeout() overflows
        ("socket_connect_timeout=-5", "?socket_connect_timeout= must be a number from 0.01"),
        ("health_check_interval=-1", "?health_check_interval= must be a whole number from 0"),
        ("protocol=9", "?protocol= must be 2 or 3 (RESP2, RESP3), got '9'"),
        ("client_name=a%20b", "?client_name= must be one word of visible ASCII characters"),
        ("lib_name=a%0Ab", "?lib_name= must be one word"),
        ("socket_keepalive=flase", "?socket_keepalive= must be true or false"),  # read as true
        ("max_connections=1", "?max_connections= must be a whole number from 4 to 1000000"),
        ("socket_read_size=0", "?socket_read_size= must be a whole number from 1 to 1048576"),
        ("db=99999999999", f"?db= must be a whole number from 0 to {DB_MAX} (a Redis has dbs"),
        ("ssl_cert_reqs=bogus", "?ssl_cert_reqs= must be one of none, optional, required"),
        ("ssl_min_version=9", "?ssl_min_version= must be an ssl.TLSVersion value"),
        ("ssl_ciphers=NOPE", "?ssl_ciphers= must be an OpenSSL cipher list"),
    ],
)
def test_a_value_no_connection_can_use_is_refused_naming_the_option(query: str, said: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_values(query, {query.partition("=")[0]})
    message = str(refused.value)
    assert said in message and "\n" not in message, message


def test_every_bad_option_is_said_in_one_line() -> None:
    with pytest.raises(ValueError) as refused:
        check_values("socket_timeout=-1&protocol=9&client_name=gw", {"socket_timeout", "protocol"})
    assert str(refused.value) == (
        "?protocol= must be 2 or 3 (RESP2, RESP3), got '9'; ?socket_timeout= must be a number "
        "from 0.01 to 300 (seconds), got '-1'"
    )


@pytest.mark.parametrize(
    "query",
    [
        "socket_timeout=0.5&socket_connect_timeout=300&socket_read_size=65536",
        "health_check_interval=0&max_connections=50&protocol=3&protocol=2",
        "client_name=gateway-1&lib_name=gw&lib_version=1.0",
        "socket_keepalive=ON&retry_on_timeout=0&db=15",
        "ssl_cert_reqs=none&ssl_min_version=771&ssl_ciphers=HIGH&ssl_check_hostname=false",
        "ssl_ca_certs=/etc/ca.pem&ssl_password=s3cret",
    ],
)
def test_values_a_connection_can_use_are_taken(query: str) -> None:
    names = {name.partition("=")[0] for name in query.split("&")}
    check_values(query, names - {"db"})


def test_an_option_without_a_text_form_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^\?ssl_ocsp_context= cannot be given in a URL"):
        check_values("ssl_ocsp_context=x", {"ssl_ocsp_context"})


def test_a_password_is_never_quoted() -> None:
    check_values("ssl_password=a%20b%0A", {"ssl_password"})  # text: never checked, never said


def test_the_db_a_redis_can_select() -> None:
    check_db(0)
    check_db(DB_MAX)
    for db in (-1, DB_MAX + 1, 99_999_999_999):
        with pytest.raises(ValueError, match=r"^\?db= must be a whole number from 0 to"):
            check_db(db)


def test_every_option_a_url_may_give_has_a_check() -> None:
    """Each option ``urls`` lets through by name (this redis-py's connections take it, as text
    or parsed) has a check of its value here: none is taken unchecked."""
    for connection_class in (redis.Connection, SSLConnection, UnixDomainSocketConnection):
        taken = _parameters(connection_class) | _parameters(redis.ConnectionPool)
        textual = {
            name
            for name in taken - _FROM_NETLOC - set(_REFUSED)
            if name in redis.connection.URL_QUERY_ARGUMENT_PARSERS or name.startswith(_TEXT_OPTIONS)
        }
        assert textual - set(CHECKS) <= {"ssl_ocsp_context"}  # an object: refused
