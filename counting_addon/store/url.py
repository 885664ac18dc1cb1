"""Redis URLs: the default, what one names (a server, a cluster, or a master watched by
sentinels), and keeping its passwords out of sight."""

from __future__ import annotations

import enum
import functools
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio.connection
from redis.asyncio.cluster import RedisCluster

DEFAULT_URL = "redis://localhost:6379/0"
# Files a rediss:// URL may name; a missing one would only show as a failed connection.
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
# A sentinel's own credentials, in the query of a sentinel URL (the userinfo is the data nodes').
SENTINEL_CREDENTIALS = ("sentinel_username", "sentinel_password")
_SENTINEL_PASSWORD = re.compile(r"(?<=[?&]sentinel_password=)[^&#]*")


class Topology(enum.Enum):
    """What a URL's scheme names."""

    # redis://, rediss://, unix://: one server (a primary, with or without replicas).
    SERVER = "server"
    # redis+cluster://, rediss+cluster://: seed nodes of a Redis Cluster.
    CLUSTER = "cluster"
    # redis+sentinel://, rediss+sentinel://: sentinels, and the name of the master they watch.
    SENTINEL = "sentinel"


SCHEMES = {
    "redis": Topology.SERVER,
    "rediss": Topology.SERVER,
    "unix": Topology.SERVER,
    "redis+cluster": Topology.CLUSTER,
    "rediss+cluster": Topology.CLUSTER,
    "redis+sentinel": Topology.SENTINEL,
    "rediss+sentinel": Topology.SENTINEL,
}
DEFAULT_PORTS = {Topology.CLUSTER: 6379, Topology.SENTINEL: 26379}


@dataclass(frozen=True)
class RedisTarget:
    """What a counter_redis_url names, ready for redis-py.

    `options`: the data nodes' connection arguments (credentials, database, TLS), converted by
    redis-py's own URL parser. `nodes`: a cluster's seeds or the sentinels (none for a
    server). `sentinel_options`: how to talk to the sentinels (their own credentials; TLS as
    for the data nodes).
    """

    url: str
    topology: Topology
    tls: bool
    options: dict[str, Any] = field(default_factory=dict)
    nodes: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_options: dict[str, Any] = field(default_factory=dict)

    @property
    def redacted(self) -> str:
        """The URL with its passwords replaced, fit for logs."""
        return redact(self.url)


def default_url() -> str:
    """The URL used when counter_redis_url is not set: REDIS_URL, else DEFAULT_URL."""
    return os.environ.get("REDIS_URL", DEFAULT_URL)


def _split_password(url: str) -> tuple[str, str, str] | None:
    """(what precedes the password, the password as typed, what follows it), if there is one.

    Read off the raw text: a password may hold '/', '?' or '#' unencoded, which ends the host
    part for urlsplit and would leave the password in plain sight.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (at and colon and password):
        return None
    return f"{scheme}{sep}{user}:", password, f"@{host}"


def redact(url: str) -> str:
    """The URL with its passwords replaced, fit for logs and error messages."""
    url = _SENTINEL_PASSWORD.sub("***", url)
    parts = _split_password(url)
    return url if parts is None else f"{parts[0]}***{parts[2]}"


def scrub(text: str, url: str) -> str:
    """`text` (an error about `url`) with the URL's passwords, as typed or decoded, replaced."""
    secrets = set(_SENTINEL_PASSWORD.findall(url))
    parts = _split_password(url)
    if parts is not None:
        secrets.add(parts[1])
    for secret in sorted({form for s in secrets if s for form in (s, unquote(s))}, key=len)[::-1]:
        text = text.replace(secret, "***")
    return text


def parse(url: str) -> RedisTarget:
    """What `url` names; ValueError, naming no password, if it is not a URL this product takes.

    No network I/O: it runs in configure(), on the event loop.
    """
    secret = _split_password(_SENTINEL_PASSWORD.sub("", url))
    if secret is not None and any(c in secret[1] for c in "/?#"):
        # Or the URL parser ends the host there and quotes bits of the password in its errors.
        raise ValueError(
            f"{redact(url)} is not a Redis URL: percent-encode '/', '?' and '#' in the password "
            "(%2F, %3F, %23), and '@' in query arguments (%40)"
        )
    try:
        target = _parse(url)
        _check_arguments(target)
        for name in TLS_FILES:
            if target.options.get(name) and not os.path.exists(target.options[name]):
                raise ValueError(f"{name}: no such file {target.options[name]!r}")
    except Exception as e:  # redis-py raises whatever a query argument of the wrong type causes
        raise ValueError(f"{redact(url)} is not a Redis URL: {scrub(str(e), url)}") from None
    return target


def _parse(url: str) -> RedisTarget:
    scheme = url.partition("://")[0]
    topology = SCHEMES.get(scheme)
    if topology is None:
        raise ValueError(f"the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    tls = scheme.startswith("rediss")
    if topology is Topology.SERVER:
        parts = urlsplit(url)
        # redis-py silently ignores a database that is not a number.
        database = parts.path.strip("/")
        if scheme != "unix" and database and not database.isdigit():
            raise ValueError(f"database {database!r} is not a number")
        return RedisTarget(url, topology, tls, dict(redis.asyncio.connection.parse_url(url)))
    # parse() refused a '?' in the password: the first one starts the query, whose
    # sentinel_password may hold an '@'.
    rest, _, query = url.partition("://")[2].partition("?")
    userinfo, at, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    nodes = tuple(_node(node, DEFAULT_PORTS[topology]) for node in hosts.split(","))
    arguments = parse_qsl(query, keep_blank_values=True)
    credentials = {k: v for k, v in arguments if k in SENTINEL_CREDENTIALS}
    if credentials and topology is not Topology.SENTINEL:
        raise ValueError(f"{', '.join(credentials)}: only a sentinel URL takes it")
    arguments = [(k, v) for k, v in arguments if k not in SENTINEL_CREDENTIALS]
    master_name, database = "", "0"
    if topology is Topology.SENTINEL:
        master_name, _, database = path.partition("/")
        if not master_name:
            raise ValueError("name the master the sentinels watch: .../MASTER_NAME[/db]")
        database = database.strip("/") or "0"
    elif path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    if not database.isdigit():
        raise ValueError(f"database {database!r} is not a number")
    # redis-py's parser converts the credentials and query arguments as it does for redis://.
    single = f"{'rediss' if tls else 'redis'}://{userinfo}{at}localhost/{database}"
    options: dict[str, Any] = dict(
        redis.asyncio.connection.parse_url(f"{single}?{urlencode(arguments)}")
    )
    for name in ("host", "port", "connection_class"):
        options.pop(name, None)
    if topology is Topology.CLUSTER and options.pop("db", 0):
        raise ValueError("a Redis Cluster has only database 0")
    if tls:
        options["ssl"] = True
    sentinel_options = {
        "username": credentials.get("sentinel_username"),
        "password": credentials.get("sentinel_password"),
        **{k: v for k, v in options.items() if k.startswith(("ssl", "socket_"))},
    }
    return RedisTarget(url, topology, tls, options, nodes, unquote(master_name), sentinel_options)


# Set by the URL's form rather than by a query argument, and taken by redis-py's pools.
_FORM_ARGUMENTS = ("connection_class", "ssl")


def _check_arguments(target: RedisTarget) -> None:
    """Refuse a query argument the client would fail on at its first connection: one that
    redis-py's connections don't take, or that can't be given as text (such as `retry`)."""
    takes_text = _arguments(target.topology, target.tls, "path" in target.options)
    for name, value in target.options.items():
        if name in _FORM_ARGUMENTS:
            continue
        if name not in takes_text:
            raise ValueError(f"unexpected keyword argument {name!r}")
        if isinstance(value, str) and not takes_text[name]:
            raise ValueError(f"{name!r} can't be given in a URL")


@functools.cache
def _arguments(topology: Topology, tls: bool, unix: bool) -> dict[str, bool]:
    """The arguments the client for such a URL takes, and whether each takes text."""
    connection = redis.asyncio.connection
    classes: list[type]
    if topology is Topology.CLUSTER:
        classes = [RedisCluster]
    elif unix:
        classes = [connection.ConnectionPool, connection.UnixDomainSocketConnection]
    elif tls:
        classes = [connection.ConnectionPool, connection.SSLConnection, connection.Connection]
    else:
        classes = [connection.ConnectionPool, connection.Connection]
    taken: dict[str, bool] = {}
    for kind in (*classes, connection.AbstractConnection):
        for name, parameter in inspect.signature(kind).parameters.items():
            if parameter.kind is parameter.VAR_KEYWORD:
                continue
            # Annotations as text, in whichever form redis-py writes them.
            taken[name] = re.search(r"\bstr\b", str(parameter.annotation)) is not None
    return taken


def _node(text: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `[ipv6]:port` or `host` (with the default port)."""
    parts = urlsplit(f"//{text}")
    if not text or not parts.hostname or parts.username is not None:
        raise ValueError(f"{text!r} is not host:port")
    return unquote(parts.hostname), parts.port or default_port
