"""What a counter knows of Redis's health (store/health.py), free of I/O: redis_up, and which
changes are worth one log line."""

from __future__ import annotations

from counting_addon.store.failures import Failure, FailureKind
from counting_addon.store.health import Health

DOWN = Failure(FailureKind.UNREACHABLE, "Redis unreachable: refused")
DOWN_AGAIN = Failure(FailureKind.UNREACHABLE, "Redis unreachable: timed out")
FULL = Failure(FailureKind.OUT_OF_MEMORY, "Redis is out of memory")


def test_redis_is_not_up_before_any_contact() -> None:
    health = Health()
    assert not health.redis_up and health.problem is None and not health.eviction_checked


def test_each_new_kind_of_failure_is_logged_once_and_a_recovery_once() -> None:
    health = Health()
    logged = [
        health.write_failed(DOWN),
        health.write_failed(DOWN_AGAIN),  # same kind, other words: no new line
        health.write_failed(FULL),
        health.wrote(),
        health.wrote(),
    ]
    assert logged == [True, False, True, True, False]
    assert health.problem is None and health.redis_up


def test_the_latest_failure_is_the_one_shown() -> None:
    health = Health()
    health.write_failed(DOWN)
    health.write_failed(DOWN_AGAIN)
    assert health.problem is DOWN_AGAIN and not health.redis_up


def test_a_failed_read_downs_redis_until_an_answer() -> None:
    health = Health()
    health.wrote()
    assert health.redis_up
    health.read_failure()
    assert not health.redis_up
    health.answered()
    assert health.redis_up


def test_a_failed_write_downs_redis_even_after_a_read_answered() -> None:
    health = Health()
    health.answered()
    health.write_failed(DOWN)
    health.answered()
    assert not health.redis_up, "a read answering does not end a write failure"
