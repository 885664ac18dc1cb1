"""What went wrong with Redis: a kind to act on, and one line to show that names no secret."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import redis

from counting_addon.store.keys import responses_key


class FailureKind(enum.Enum):
    """What a failed write or read means for the counter; the writer logs each change of kind."""

    # No connection, a timeout, a connection lost: Redis may be back any moment.
    UNREACHABLE = "Redis unreachable"
    # Authentication or ACL: needs the URL or Redis's configuration fixed.
    REFUSED = "Redis refused us"
    # The key holds something INCRBY can't add to: needs the key fixed.
    NOT_AN_INTEGER = "Redis holds a non-integer"
    # WAIT found fewer replicas than counter_redis_replicas asks for: needs a replica back.
    TOO_FEW_REPLICAS = "Redis has too few replicas"
    # Used memory is over maxmemory, under noeviction: needs memory freed or maxmemory raised.
    OUT_OF_MEMORY = "Redis is out of memory"
    # A background save failed and stop-writes-on-bgsave-error refuses writes: needs the disk
    # (or the save) fixed.
    CANNOT_PERSIST = "Redis cannot persist"
    # Any other error Redis answered with.
    ERROR = "Redis error"


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    message: str

    def __str__(self) -> str:
        return self.message


class TooFewReplicas(Exception):
    """A batch reached fewer replicas than counter_redis_replicas asks for, within WAIT's
    timeout: it is not acknowledged, and is resent."""

    def __init__(self, acknowledged: int, required: int, timeout: float) -> None:
        super().__init__(
            f"Redis has fewer replicas than counter_redis_replicas={required} (WAIT: "
            f"{acknowledged} of {required} acknowledged within {timeout:g} s)"
        )


def _caused_by(
    e: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]
) -> bool:
    """Whether `e` or an exception it was raised from or during is a `kind`."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _refused_as(e: BaseException, code: str) -> bool:
    """Whether Redis refused with error `code`: first in its reply, or, from inside a script
    (Redis 6 and some 7.x), after "Error running script ...: -"."""
    return isinstance(e, redis.ResponseError) and re.search(rf"(^|: -){code} ", str(e)) is not None


def not_an_integer(key: str) -> Failure:
    return Failure(
        FailureKind.NOT_AN_INTEGER, f"Redis error: the value under key {key!r} is not an integer"
    )


# What redis-py's cluster client raises when it can't reach the slot's node; some of them are
# not ConnectionErrors (RedisClusterException is a bare Exception).
CLUSTER_UNREACHABLE = (redis.exceptions.ClusterDownError, redis.exceptions.SlotNotCoveredError)
# The counter's slot is moving between nodes (a resharding, a failover): the node refused the
# command, or redis-py gave up following it ("TTL exhausted").
SLOT_MOVING = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterError,
)
CONNECTION_FAILED = (redis.ConnectionError, redis.TimeoutError, OSError)
# Sentinel's "No master found" lists every sentinel's error: a kilobyte for one log line.
LONGEST_MESSAGE = 300


def _tls_hint(e: BaseException) -> str:
    text = str(e)
    # "CA cert does not include key usage extension" (a plain `openssl req -x509` CA), or
    # "Path length given without key usage keyCertSign".
    if "CERTIFICATE_VERIFY_FAILED" in text and "key usage" in text:
        return (
            " (Python 3.13 and later need keyUsage keyCertSign on the CA: see "
            "docs/redis.md, Redis over TLS)"
        )
    if _caused_by(e, ConnectionResetError) or "CERTIFICATE_REQUIRED" in text:
        return (
            " (does the server require a client certificate? add ssl_certfile= and "
            "ssl_keyfile= to the URL)"
        )
    if isinstance(e, redis.TimeoutError | TimeoutError):
        return " (the URL is rediss://: does this server speak TLS?)"
    return ""


def _unreachable(e: BaseException, tls: bool) -> Failure:
    # A TLS mismatch shows only as a timeout or a reset: say what may be behind it.
    if tls:
        hint = _tls_hint(e)
    elif _caused_by(e, ConnectionResetError):
        hint = " (a server expecting TLS does this to plain connections: rediss://?)"
    else:
        hint = ""
    text = str(e) or type(e).__name__
    if len(text) > LONGEST_MESSAGE:
        text = text[:LONGEST_MESSAGE] + "..."
    return Failure(FailureKind.UNREACHABLE, f"Redis unreachable: {text}{hint}")


def classify(e: BaseException, key: str, tls: bool) -> Failure:
    """The failure behind exception `e`, raised while writing or reading `key`."""
    if getattr(e, "status_code", None) == "NOAUTH":
        # redis-py's words are about the HELLO it sent, not about what is wrong.
        return Failure(
            FailureKind.REFUSED,
            "Redis refused us: NOAUTH, it requires a password and the URL has none",
        )
    if isinstance(e, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return Failure(FailureKind.REFUSED, f"Redis refused us: {e}")
    if isinstance(e, TooFewReplicas):
        return Failure(FailureKind.TOO_FEW_REPLICAS, str(e))
    if isinstance(e, CONNECTION_FAILED + CLUSTER_UNREACHABLE):
        return _unreachable(e, tls)
    if isinstance(e, SLOT_MOVING):
        return Failure(
            FailureKind.UNREACHABLE,
            f"Redis unreachable: the cluster is moving the counter's slot ({type(e).__name__}: "
            f"{e})",
        )
    if isinstance(e, redis.exceptions.RedisClusterException) and _caused_by(e, CONNECTION_FAILED):
        # "Redis Cluster cannot be connected. Please provide at least one reachable node"
        return _unreachable(e, tls)
    if isinstance(e, redis.exceptions.OutOfMemoryError) or _refused_as(e, "OOM"):
        # Redis's words name the script's hash and line: the hint says what to do instead.
        return Failure(
            FailureKind.OUT_OF_MEMORY,
            "Redis is out of memory: it refuses writes while used memory is over maxmemory "
            "(free memory or raise maxmemory)",
        )
    if _refused_as(e, "MISCONF"):
        return Failure(
            FailureKind.CANNOT_PERSIST,
            "Redis cannot persist: its last background save failed, and it refuses writes "
            "until one succeeds (see Redis's log; stop-writes-on-bgsave-error)",
        )
    if isinstance(e, redis.ResponseError):
        # The batch script's own refusal of a class that is not an integer (APPLY_BATCH).
        if "hash value is not an integer" in str(e):
            return not_an_integer(responses_key(key))
        # Redis says only "ERR value is not an integer or out of range": its words are all
        # there is.
        if "not an integer" in str(e):
            return not_an_integer(key)
    return Failure(FailureKind.ERROR, f"Redis error: {e}")
