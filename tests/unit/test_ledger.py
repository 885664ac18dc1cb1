"""The counter's bookkeeping, without any I/O."""

from __future__ import annotations

import pytest

from counting_addon.code_class import CodeClass
from counting_addon.store.ledger import MAX_STAMPS, Batch, Ledger


def test_counts_accumulate_into_one_batch() -> None:
    ledger = Ledger()
    for _ in range(5):
        ledger.add()
    assert ledger.next_batch() == Batch(seq=1, requests=5)
    assert (ledger.pending, ledger.unwritten) == (0, 5)


def test_nothing_to_write() -> None:
    assert Ledger().next_batch() is None


def test_unacknowledged_batch_is_resent_unchanged() -> None:
    ledger = Ledger()
    ledger.add(3)
    first = ledger.next_batch()
    ledger.add(2)  # arrives while the first batch's reply is outstanding (or lost)
    assert ledger.next_batch() == first
    assert ledger.pending == 2


def test_ack_moves_on_to_a_new_sequence_number() -> None:
    ledger = Ledger()
    ledger.add(3)
    first = ledger.next_batch()
    assert first is not None
    ledger.add(2)
    ledger.ack(first)
    assert ledger.acknowledged == 3
    assert ledger.next_batch() == Batch(seq=2, requests=2)


def test_sequence_numbers_only_grow_on_new_batches() -> None:
    ledger = Ledger()
    seqs = []
    for _ in range(3):
        ledger.add()
        batch = ledger.next_batch()
        assert batch is not None
        ledger.next_batch()  # asking again (a retry) must not use up a number
        seqs.append(batch.seq)
        ledger.ack(batch)
    assert seqs == [1, 2, 3]


def test_ack_of_a_batch_not_in_flight_is_refused() -> None:
    ledger = Ledger()
    ledger.add()
    ledger.next_batch()
    with pytest.raises(ValueError):
        ledger.ack(Batch(seq=7, requests=1))
    assert ledger.unwritten == 1


def test_written_through_a_mark() -> None:
    ledger = Ledger()
    ledger.add(2)
    mark = ledger.counted
    batch = ledger.next_batch()
    assert batch is not None
    ledger.add()  # counted after the mark: not waited for
    assert not ledger.written_through(mark)
    ledger.ack(batch)
    assert ledger.written_through(mark)
    assert ledger.unwritten == 1


def test_responses_go_in_the_batch_with_the_requests() -> None:
    ledger = Ledger()
    ledger.add(3)
    for code_class in (CodeClass.C2XX, CodeClass.C2XX, CodeClass.C4XX, CodeClass.C1XX):
        ledger.add_response(code_class)
    assert ledger.next_batch() == Batch(seq=1, requests=3, responses=(1, 2, 0, 1, 0))
    assert (ledger.unwritten, ledger.responses_unwritten) == (3, 4)


def test_a_batch_of_responses_alone() -> None:
    """A response arrives after its request's count was written."""
    ledger = Ledger()
    ledger.add_response(CodeClass.C5XX)
    batch = ledger.next_batch()
    assert batch == Batch(seq=1, requests=0, responses=(0, 0, 0, 0, 1))
    ledger.ack(batch)
    assert ledger.idle
    assert ledger.responses_acknowledged == 1


def test_a_batch_with_responses_is_resent_unchanged() -> None:
    ledger = Ledger()
    ledger.add()
    ledger.add_response(CodeClass.C3XX)
    first = ledger.next_batch()
    ledger.add_response(CodeClass.C3XX)  # while the first batch's reply is outstanding
    assert ledger.next_batch() == first
    assert ledger.pending_responses[CodeClass.C3XX] == 1


def test_reset_drops_what_is_pending_and_follows_the_batch_in_flight() -> None:
    ledger = Ledger()
    ledger.add(2)
    sent = ledger.next_batch()
    assert sent is not None
    ledger.add(5)
    ledger.add_response(CodeClass.C2XX)
    ledger.request_reset()
    mark = ledger.mark()  # the reset's: written once Redis applied the reset
    assert (ledger.unwritten, ledger.responses_unwritten) == (2, 0)
    assert ledger.next_batch() == sent  # resent as it was: the reset zeroes it anyway
    ledger.add()  # after the reset: written after it
    ledger.ack(sent)
    assert not ledger.written_through(mark)  # the reset is not written yet
    reset = ledger.next_batch()
    assert reset == Batch(seq=2, requests=0, reset=True)
    ledger.ack(reset)
    assert ledger.written_through(mark)
    assert ledger.next_batch() == Batch(seq=3, requests=1)


def test_resets_before_a_write_make_one_batch() -> None:
    ledger = Ledger()
    ledger.request_reset()
    ledger.request_reset()
    reset = ledger.next_batch()
    assert reset == Batch(seq=1, requests=0, reset=True)
    ledger.ack(reset)
    assert ledger.idle
    assert ledger.next_batch() is None


def test_idle_only_once_every_count_and_reset_is_written() -> None:
    ledger = Ledger()
    assert ledger.idle
    ledger.add_response(CodeClass.C2XX)
    assert not ledger.idle
    batch = ledger.next_batch()
    assert batch is not None and not ledger.idle
    ledger.ack(batch)
    assert ledger.idle


def test_series_gather_into_the_batch_beside_the_requests() -> None:
    ledger = Ledger()
    for values in [("/a", "GET"), ("/b", "GET"), ("/a", "GET")]:
        ledger.add(series=values)
    ledger.add()  # a request counted without labels (before counter_by was set)
    batch = ledger.next_batch()
    assert batch is not None and batch.requests == 4
    assert dict(batch.series) == {("/a", "GET"): 2, ("/b", "GET"): 1}
    ledger.add(series=("/a", "GET"))
    assert ledger.next_batch() == batch, "resent unchanged"
    ledger.ack(batch)
    assert dict(ledger.next_batch().series) == {("/a", "GET"): 1}  # type: ignore[union-attr]


def test_a_reset_drops_the_pending_series_with_the_counts() -> None:
    ledger = Ledger()
    ledger.add(series=("/a",))
    ledger.request_reset()
    ledger.add(series=("/b",))
    reset = ledger.next_batch()
    assert reset is not None and reset.reset and reset.series == ()
    ledger.ack(reset)
    assert ledger.next_batch() == Batch(seq=2, requests=1, series=((("/b",), 1),))


def test_requests_go_in_the_batch_by_the_second_they_arrived_in() -> None:
    ledger = Ledger()
    ledger.add(second=100)
    ledger.add(2, second=101)
    ledger.add(second=100)
    batch = ledger.next_batch()
    assert batch is not None and batch.seconds == ((100, 2), (101, 2))
    ledger.add(second=102)
    assert ledger.next_batch() == batch  # resent unchanged
    ledger.ack(batch)
    later = ledger.next_batch()
    assert later is not None and later.seconds == ((102, 1),)


def test_a_long_wait_keeps_a_few_hundred_stamps_not_one_a_second() -> None:
    ledger = Ledger()
    ledger.add(second=0)
    ledger.next_batch()  # in flight, its reply never coming: Redis is away for a day
    for second in range(1, 86_400, 3):
        ledger.add(second=second)
    assert len(ledger.pending_seconds) <= MAX_STAMPS
    assert sum(ledger.pending_seconds.values()) == ledger.pending == 28_800


def test_body_bytes_go_in_the_batch_and_count_until_acknowledged() -> None:
    ledger = Ledger()
    ledger.add_bytes(10, 2000)
    ledger.add_bytes(0, 5)
    mark = ledger.mark()
    batch = ledger.next_batch()  # bytes alone make a batch: a WebSocket's messages
    assert batch == Batch(seq=1, requests=0, request_bytes=10, response_bytes=2005)
    assert (ledger.bytes_unwritten, ledger.idle) == (2015, False)
    ledger.ack(batch)
    assert ledger.written_through(mark) and ledger.idle


def test_a_reset_drops_the_pending_bytes_and_stamps() -> None:
    ledger = Ledger()
    ledger.add(second=5)
    ledger.add_bytes(7, 8)
    ledger.request_reset()
    assert (ledger.pending_seconds, ledger.bytes_unwritten, ledger.bytes_dropped) == ({}, 0, 15)
    assert ledger.next_batch() == Batch(seq=1, requests=0, reset=True)
