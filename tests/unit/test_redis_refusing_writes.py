"""A real Redis that refuses writes, out of memory or unable to persist: the counter says why in
one line with its hint (no script hash or line), the counts wait, and they land exactly once
when Redis accepts writes again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from counting_addon.store.counter import RedisCounter
from counting_addon.store.failures import FailureKind
from counting_addon.store.url import parse
from tests.support.in_process import BACKOFF_CAP
from tests.support.processes import poll, start_redis, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


def out_of_memory(admin: redis.Redis, tmp_path: Path) -> Callable[[], None]:
    """Redis full under noeviction; returns what frees it."""
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)

    def recover() -> None:
        admin.config_set("maxmemory", 0)

    return recover


def cannot_persist(admin: redis.Redis, tmp_path: Path) -> Callable[[], None]:
    """A background save fails (its directory is gone) while saves are configured; returns
    what makes the next one succeed."""
    gone = tmp_path / "gone"
    gone.mkdir()
    admin.config_set("save", "3600 1")
    admin.config_set("dir", str(gone))
    gone.rmdir()
    admin.bgsave()
    wait_for(
        lambda: (
            admin.info("persistence")["rdb_last_bgsave_status"] == "err"
            and not admin.info("persistence")["rdb_bgsave_in_progress"]
        ),
        10,
        "the background save to fail",
    )

    def recover() -> None:
        gone.mkdir()
        admin.config_set("dir", str(gone))  # Redis's working directory was the one removed
        admin.bgsave()
        wait_for(
            lambda: admin.info("persistence")["rdb_last_bgsave_status"] == "ok",
            10,
            "a background save to succeed",
        )
        admin.config_set("save", "")  # as it was: no save on shutdown

    return recover


@pytest.mark.parametrize(
    ("refuse", "kind", "says"),
    [
        (out_of_memory, FailureKind.OUT_OF_MEMORY, "Redis is out of memory"),
        (cannot_persist, FailureKind.CANNOT_PERSIST, "Redis cannot persist"),
    ],
)
async def test_refused_writes_wait_with_their_reason_and_land_once(
    server: EmbeddedRedis,
    tmp_path: Path,
    refuse: Callable[[redis.Redis, Path], Callable[[], None]],
    kind: FailureKind,
    says: str,
) -> None:
    with redis.Redis.from_url(server.url) as admin:
        admin.set("counter", 10)
        accept = refuse(admin, tmp_path)
        counter = RedisCounter(parse(server.url), "counter", backoff_cap=BACKOFF_CAP)
        for _ in range(3):
            counter.add()
        await poll(lambda: counter.problem is not None, 10, "the refused write")
        assert counter.problem is not None and counter.problem.kind is kind
        message = str(counter.problem)
        assert message.startswith(says), message
        assert "script" not in message and "@user_script" not in message, message
        assert counter.unwritten == 3 and admin.get("counter") == b"10"
        accept()
        await poll(lambda: counter.problem is None, 10, "Redis accepting the counts again")
        assert await counter.read() == 13
        assert await counter.close(1.0) == 0
        assert admin.get("counter") == b"13"
