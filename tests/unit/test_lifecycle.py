"""A counter's phase and deadline (store/lifecycle.py), free of I/O: every transition, with the
clock passed in."""

from __future__ import annotations

import pytest

from counting_addon.store.lifecycle import BACKOFF_CAP, SHUTDOWN_RETRY, Lifecycle, Phase


def test_a_new_counter_counts_with_no_deadline() -> None:
    life = Lifecycle()
    assert (life.phase, life.deadline, life.shutting_down) == (Phase.COUNTING, None, False)
    assert life.keeps_writing(idle=True)


def test_retiring_sets_the_deadline_once() -> None:
    life = Lifecycle()
    assert life.retire(now=100.0, bound=600.0)
    assert (life.phase, life.deadline) == (Phase.RETIRED, 700.0)
    assert not life.retire(now=200.0, bound=5.0), "a second retirement changes nothing"
    assert (life.phase, life.deadline) == (Phase.RETIRED, 700.0)


@pytest.mark.parametrize(
    ("retired_at", "shut_down_at", "deadline"),
    [
        (None, 100.0, 103.0),  # never retired: the shutdown's bound
        (0.0, 100.0, 103.0),  # retired long ago: the shutdown's bound comes first
        (99.0, 100.0, 103.0),
        (-598.0, 100.0, 2.0),  # the retirement's deadline comes first: it stays
    ],
)
def test_shutting_down_keeps_the_earlier_deadline(
    retired_at: float | None, shut_down_at: float, deadline: float
) -> None:
    life = Lifecycle()
    if retired_at is not None:
        life.retire(retired_at, 600.0)
    life.shut_down(shut_down_at, 3.0)
    assert (life.phase, life.deadline, life.shutting_down) == (Phase.SHUTTING_DOWN, deadline, True)
    assert not life.retire(shut_down_at, 600.0), "no retirement after shutdown"


@pytest.mark.parametrize(
    ("phase", "idle", "keeps_writing"),
    [
        (Phase.COUNTING, True, True),
        (Phase.COUNTING, False, True),
        (Phase.RETIRED, False, True),
        (Phase.RETIRED, True, False),
        (Phase.SHUTTING_DOWN, False, True),
        (Phase.SHUTTING_DOWN, True, False),
    ],
)
def test_the_writer_goes_on_while_counting_or_until_nothing_is_left(
    phase: Phase, idle: bool, keeps_writing: bool
) -> None:
    life = Lifecycle()
    if phase is Phase.RETIRED:
        life.retire(0.0, 1.0)
    elif phase is Phase.SHUTTING_DOWN:
        life.shut_down(0.0, 1.0)
    assert life.keeps_writing(idle) is keeps_writing


@pytest.mark.parametrize(
    ("failures", "jitter", "delay"),
    [
        (1, 0.0, 0.05),  # half of 0.1
        (1, 1.0, 0.1),
        (3, 0.5, 0.3),  # 0.4: from 0.2 to 0.4
        (20, 0.0, BACKOFF_CAP / 2),
        (20, 1.0, BACKOFF_CAP),
    ],
)
def test_retries_back_off_exponentially_with_jitter_up_to_the_cap(
    failures: int, jitter: float, delay: float
) -> None:
    assert Lifecycle().retry_delay(failures, jitter) == pytest.approx(delay)


def test_the_cap_is_the_counters_and_shutdown_retries_soon() -> None:
    life = Lifecycle(backoff_cap=0.2)
    assert life.retry_delay(20, 1.0) == pytest.approx(0.2)
    assert Lifecycle().retry_delay(20, 1.0) == BACKOFF_CAP
    shutting = Lifecycle()
    shutting.shut_down(0.0, 3.0)
    assert shutting.retry_delay(20, 1.0) == SHUTDOWN_RETRY
    assert shutting.retry_delay(1, 0.0) == pytest.approx(0.05), "never longer than without"


@pytest.mark.parametrize(
    ("phase", "unwritten", "announced"),
    [
        (Phase.RETIRED, 3, True),
        (Phase.RETIRED, 0, False),  # nothing left: nothing to say
        (Phase.SHUTTING_DOWN, 3, False),  # the shutdown reports what it loses itself
    ],
)
def test_a_retirement_is_announced_only_with_counts_left(
    phase: Phase, unwritten: int, announced: bool
) -> None:
    life = Lifecycle()
    life.retire(0.0, 600.0)
    if phase is Phase.SHUTTING_DOWN:
        life.shut_down(1.0, 3.0)
    assert life.announce_retirement(unwritten) is announced
    assert life.left_at_retirement == (unwritten if announced else 0)


def test_retired_without_a_loop_has_no_deadline_to_meet() -> None:
    """No event loop: no writer ever ran; a shutdown later sets the only deadline."""
    life = Lifecycle()
    assert life.retire(None, 600.0)
    assert (life.phase, life.deadline) == (Phase.RETIRED, None)
    life.shut_down(50.0, 3.0)
    assert life.deadline == 53.0
