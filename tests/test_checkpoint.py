"""The Checkpoint commits only what the target acknowledged, in order."""

from replicator.checkpoint import Checkpoint
from replicator.producer import Delivery


class FakeFuture(Delivery):
    """A delivery of one part, acknowledged or failed by the test."""

    def __init__(self):
        super().__init__(parts=1, timestamp=0)

    def ack(self):
        self.part_written()


P = ("topic", 0)


def track(checkpoint, offsets):
    futures = {offset: FakeFuture() for offset in offsets}
    pending = checkpoint.pending(P)
    for offset, future in futures.items():
        pending.append((offset, offset + 1, future))
    return futures


def test_commits_only_acknowledged_offsets():
    checkpoint = Checkpoint()
    futures = track(checkpoint, [10, 11, 12])
    futures[10].ack()
    futures[12].ack()
    assert checkpoint.settle() == []
    assert checkpoint.to_commit() == {P: 11}


def test_an_unacknowledged_record_holds_back_later_acknowledged_ones():
    checkpoint = Checkpoint()
    futures = track(checkpoint, [0, 1, 2])
    futures[1].ack()
    futures[2].ack()
    checkpoint.settle()
    assert checkpoint.to_commit() == {}
    futures[0].ack()
    checkpoint.settle()
    assert checkpoint.to_commit() == {P: 3}


def test_a_failed_record_is_reported_and_blocks_its_partition():
    checkpoint = Checkpoint()
    futures = track(checkpoint, [5, 6])
    futures[5].ack()
    futures[6].fail(ValueError("too large"))
    [failure] = checkpoint.settle()
    assert (failure.partition, failure.offset) == (P, 6)
    assert checkpoint.to_commit() == {P: 6}


def test_skipping_a_failed_record_moves_past_it():
    checkpoint = Checkpoint()
    futures = track(checkpoint, [5, 6])
    futures[5].fail(ValueError("too large"))
    futures[6].ack()
    checkpoint.settle()
    checkpoint.skip_failed(P)
    checkpoint.settle()
    assert checkpoint.to_commit() == {P: 7}


def test_rewind_returns_the_first_unacknowledged_offset():
    checkpoint = Checkpoint()
    futures = track(checkpoint, [3, 4, 5])
    futures[3].ack()
    checkpoint.settle()
    assert checkpoint.rewind(P) == 4
    assert checkpoint.in_flight() == 0
    assert checkpoint.to_commit() == {P: 4}


def test_records_needing_no_send_settle_in_order():
    checkpoint = Checkpoint()
    futures = track(checkpoint, [0])
    checkpoint.done(P, 1, 2)
    checkpoint.settle()
    assert checkpoint.to_commit() == {}
    futures[0].ack()
    checkpoint.settle()
    assert checkpoint.to_commit() == {P: 2}


def test_a_record_needing_no_send_with_nothing_in_flight_is_settled_at_once():
    checkpoint = Checkpoint()
    checkpoint.done(P, 7, 8)
    assert checkpoint.to_commit() == {P: 8}


def test_committed_positions_are_not_committed_again():
    checkpoint = Checkpoint()
    checkpoint.done(P, 0, 1)
    checkpoint.committed(checkpoint.to_commit())
    assert checkpoint.to_commit() == {}


def test_a_batch_acknowledgement_settles_its_whole_range():
    checkpoint = Checkpoint()
    batch = FakeFuture()
    checkpoint.pending(P).append((10, 25, batch))
    checkpoint.settle()
    assert checkpoint.to_commit() == {}
    batch.ack()
    checkpoint.settle()
    assert checkpoint.to_commit() == {P: 25}


def test_a_failed_batch_rewinds_to_its_first_offset():
    checkpoint = Checkpoint()
    batch = FakeFuture()
    checkpoint.pending(P).append((10, 25, batch))
    batch.fail(ValueError("too large"))
    [failure] = checkpoint.settle()
    assert (failure.offset, failure.next_offset) == (10, 25)
    assert checkpoint.rewind(P) == 10


def test_forgotten_partitions_are_not_committed():
    checkpoint = Checkpoint()
    checkpoint.done(P, 0, 1)
    checkpoint.forget([P])
    assert checkpoint.to_commit() == {}


def test_an_idle_partition_advances_past_offsets_it_never_saw():
    checkpoint = Checkpoint()
    checkpoint.done(P, 4, 5)
    checkpoint.advance(P, 6)
    assert checkpoint.to_commit() == {P: 6}


def test_a_partition_with_records_in_flight_does_not_advance():
    checkpoint = Checkpoint()
    track(checkpoint, [4])
    checkpoint.advance(P, 6)
    assert checkpoint.to_commit() == {}


def test_rewind_withdraws_the_writes_it_forgets():
    checkpoint = Checkpoint()
    first, second = FakeFuture(), FakeFuture()
    checkpoint.pending(P).extend([(4, 6, first), (6, 9, second)])
    checkpoint.rewind(P)
    assert first.withdrawn and second.withdrawn
