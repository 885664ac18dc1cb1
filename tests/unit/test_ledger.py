"""The counter's bookkeeping, without any I/O."""

from __future__ import annotations

import pytest

from counting_addon.ledger import Batch, Ledger


def test_counts_accumulate_into_one_batch() -> None:
    ledger = Ledger()
    for _ in range(5):
        ledger.add()
    assert ledger.next_batch() == Batch(seq=1, amount=5)
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
    assert ledger.next_batch() == Batch(seq=2, amount=2)


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
        ledger.ack(Batch(seq=7, amount=1))
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
