"""What each Redis failure means to the counter (failures.classify), in a table: the kind it
acts on and the one line it shows, which names no secret and stays short."""

from __future__ import annotations

import pytest
import redis
import redis.exceptions as rex
from redis.asyncio.sentinel import MasterNotFoundError

from counting_addon.store.failures import FailureKind, TooFewReplicas, classify

UNREACHABLE, ERROR = FailureKind.UNREACHABLE, FailureKind.ERROR


def caused(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "tls", "kind", "says"),
    [
        (redis.ConnectionError("Connection refused"), False, UNREACHABLE, "Connection refused"),
        (rex.ClusterDownError("The cluster is down"), False, UNREACHABLE, "cluster is down"),
        (rex.SlotNotCoveredError("Slot 5 not covered"), False, UNREACHABLE, "not covered"),
        (
            caused(
                rex.RedisClusterException("Redis Cluster cannot be connected."),
                redis.ConnectionError("refused"),
            ),
            False,
            UNREACHABLE,
            "cannot be connected",
        ),
        (rex.TryAgainError("TRYAGAIN"), False, UNREACHABLE, "moving the counter's slot"),
        (rex.ClusterError("TTL exhausted."), False, UNREACHABLE, "moving the counter's slot"),
        (rex.AskError("6680 127.0.0.1:7001"), False, UNREACHABLE, "moving the counter's slot"),
        (
            MasterNotFoundError("No master found for 'mymaster' : " + "x" * 2000),
            False,
            UNREACHABLE,
            "No master found for 'mymaster'",
        ),
        (TooFewReplicas(0, 1, 1.0), False, FailureKind.TOO_FEW_REPLICAS, "0 of 1 acknowledged"),
        (
            caused(redis.ConnectionError("reset"), ConnectionResetError()),
            True,
            UNREACHABLE,
            "client certificate",
        ),
        (
            caused(redis.ConnectionError("reset"), ConnectionResetError()),
            False,
            UNREACHABLE,
            "rediss://?",
        ),
        (
            redis.ConnectionError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert"),
            True,
            UNREACHABLE,
            "client certificate",
        ),
        (
            redis.ConnectionError(
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: CA cert does not "
                "include key usage extension"
            ),
            True,
            UNREACHABLE,
            "need keyUsage keyCertSign on the CA",
        ),
        (redis.TimeoutError("Timeout connecting"), True, UNREACHABLE, "does this server speak TLS"),
        (
            redis.ResponseError("ERR hash value is not an integer (2xx)"),
            False,
            FailureKind.NOT_AN_INTEGER,
            "'{api}:responses' is not an integer",
        ),
        (
            redis.ResponseError("ERR value is not an integer or out of range"),
            False,
            FailureKind.NOT_AN_INTEGER,
            "'api' is not an integer",
        ),
        # As redis-py raises them from inside the batch script: the hash and line go.
        (
            rex.OutOfMemoryError(
                "command not allowed when used memory > 'maxmemory'. script: 1c07ab, on "
                "@user_script:15."
            ),
            False,
            FailureKind.OUT_OF_MEMORY,
            "Redis is out of memory: it refuses writes while used memory is over maxmemory",
        ),
        (
            redis.ResponseError(
                "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
                "persist to disk. script: 1c07ab, on @user_script:15."
            ),
            False,
            FailureKind.CANNOT_PERSIST,
            "Redis cannot persist: its last background save failed",
        ),
        (
            redis.ResponseError(
                "Error running script (call to f_361f): @user_script:27: @user_script: 27: -OOM "
                "command not allowed when used memory > 'maxmemory'."
            ),
            False,
            FailureKind.OUT_OF_MEMORY,
            "Redis is out of memory",
        ),
        (redis.ResponseError("BUSY Redis is busy running a script"), False, ERROR, "BUSY"),
    ],
)
def test_each_failure_has_a_kind_and_a_line(
    error: BaseException, tls: bool, kind: FailureKind, says: str
) -> None:
    failure = classify(error, "api", tls)
    assert failure.kind is kind
    assert says in failure.message, failure.message
    assert len(failure.message) < 500, "one line for a log"
