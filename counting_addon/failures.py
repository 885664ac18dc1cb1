"""What went wrong with Redis: a kind to act on, and one line to show that names no secret."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import redis


class FailureKind(enum.Enum):
    """What a failed write or read means for the counter; the writer logs each change of kind."""

    # No connection, a timeout, a connection lost: Redis may be back any moment.
    UNREACHABLE = "Redis unreachable"
    # Authentication or ACL: needs the URL or Redis's configuration fixed.
    REFUSED = "Redis refused us"
    # The key holds something INCRBY can't add to: needs the key fixed.
    NOT_AN_INTEGER = "Redis holds a non-integer"
    # Any other error Redis answered with.
    ERROR = "Redis error"


@dataclass(frozen=True, slots=True)
class Failure:
    kind: FailureKind
    message: str

    def __str__(self) -> str:
        return self.message


def _caused_by(e: BaseException, kind: type[BaseException]) -> bool:
    """Whether `e` or an exception it was raised from or during is a `kind`."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def not_an_integer(key: str) -> Failure:
    return Failure(
        FailureKind.NOT_AN_INTEGER, f"Redis error: the value under key {key!r} is not an integer"
    )


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
    if isinstance(e, redis.ConnectionError | redis.TimeoutError | OSError):
        # A TLS mismatch shows only as a timeout or a reset: say what may be behind it.
        hint = ""
        if tls and isinstance(e, redis.TimeoutError | TimeoutError):
            hint = " (the URL is rediss://: does this server speak TLS?)"
        elif not tls and _caused_by(e, ConnectionResetError):
            hint = " (a server expecting TLS does this to plain connections: rediss://?)"
        return Failure(FailureKind.UNREACHABLE, f"Redis unreachable: {e or type(e).__name__}{hint}")
    # Redis says only "ERR value is not an integer or out of range": its words are all there is.
    if isinstance(e, redis.ResponseError) and "not an integer" in str(e):
        return not_an_integer(key)
    return Failure(FailureKind.ERROR, f"Redis error: {e}")
