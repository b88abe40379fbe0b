"""The offset map: spans journaled as the target acknowledges them, written before the
positions they cover are committed, and a committed source offset translated to the
target exactly, or refused with the reason."""

import pytest
from kafka.errors import TopicAuthorizationFailedError

from replicator import batches
from replicator.map_topic import MapWriter, MapWriteRefused
from replicator.offset_map import Entry, Journal, Partition, PartitionMap, Span

SOURCE = Partition("orders", 2)
TARGET = Partition("orders.copy", 2)


def records_of(data: bytes):
    return batches.records(batches.split(batches.stamp(data, 1, 0, 0))[0])


def a_map(*spans) -> PartitionMap:
    return PartitionMap([Span(*span) for span in spans])


def journaled(*writes) -> list[Span]:
    journal = Journal("cluster-a")
    for source, target, count in writes:
        journal.record(SOURCE, TARGET, source, target, count)
    return [entry.span for entry in journal.take()]


def test_a_write_that_continues_the_last_span_extends_it():
    assert journaled((0, 0, 10), (10, 10, 5)) == [Span(0, 0, 15)]


def test_a_write_after_a_gap_on_either_side_starts_a_new_span():
    assert journaled((0, 0, 10), (12, 10, 5), (17, 20, 1)) == [
        Span(0, 0, 10), Span(12, 10, 5), Span(17, 20, 1)]


def test_a_span_written_and_then_extended_is_written_again_under_the_same_key():
    journal = Journal("cluster-a")
    journal.record(SOURCE, TARGET, 0, 0, 10)
    [first] = journal.take()
    journal.record(SOURCE, TARGET, 10, 10, 5)
    [again] = journal.take()
    assert again.key == first.key
    assert again.count == 15
    assert journal.take() == []


def test_a_forgotten_partition_starts_a_new_span_when_it_comes_back():
    journal = Journal("cluster-a")
    journal.record(SOURCE, TARGET, 0, 0, 10)
    journal.forget([SOURCE])
    journal.record(SOURCE, TARGET, 10, 10, 5)
    assert [entry.span for entry in journal.take()] == [Span(0, 0, 10), Span(10, 10, 5)]


def test_a_map_record_reads_back_as_the_entry_it_was_written_from():
    journal = Journal("cluster-a")
    journal.record(SOURCE, TARGET, 7, 42, 3)
    [entry] = journal.take()
    assert Entry.decode(*entry.encode()) == entry


def test_a_record_that_is_not_a_map_entry_is_ignored():
    assert Entry.decode(b"not json", b"{}") is None
    assert Entry.decode(b'["a","t",0,1,"t",0,1]', b'{"no count": 1}') is None


def test_an_offset_inside_a_copy_translates_to_that_record():
    assert a_map((100, 7, 50)).translate(120, replicated_to=150).target == 27


def test_an_offset_copied_twice_translates_to_its_latest_copy():
    # Copied 0..99 at 0..99; a crash after committing 60 copied 60..119 again at 100..159.
    partition = a_map((0, 0, 100), (60, 100, 60))
    assert partition.translate(80, replicated_to=120).target == 120
    assert partition.translate(30, replicated_to=120).target == 30


def test_an_offset_in_a_gap_translates_to_the_first_record_copied_after_it():
    # 10..14 were an aborted transaction and its marker: never copied.
    assert a_map((0, 0, 10), (15, 10, 5)).translate(12, replicated_to=20).target == 10


def test_an_offset_in_a_gap_before_a_replayed_span_takes_its_latest_copy():
    partition = a_map((0, 0, 10), (15, 10, 5), (15, 30, 5))
    assert partition.translate(12, replicated_to=20).target == 30


def test_an_offset_at_the_end_of_the_copies_translates_to_the_end_on_the_target():
    assert a_map((0, 40, 10)).translate(10, replicated_to=10).target == 50


def test_an_offset_past_the_copies_that_the_replicator_passed_translates_to_their_end():
    # 10..19 were an aborted transaction: nothing to copy.
    assert a_map((0, 40, 10)).translate(15, replicated_to=20).target == 50


def test_an_offset_the_replicator_has_not_reached_is_not_translated():
    translation = a_map((0, 0, 10)).translate(15, replicated_to=10)
    assert translation.target is None
    assert translation.reason == "not copied yet (the replicator has copied up to offset 10)"


def test_an_offset_before_the_first_copy_is_not_translated():
    translation = a_map((500, 0, 10)).translate(20, replicated_to=510)
    assert translation.target is None
    assert "before replication started" in translation.reason


def test_an_offset_whose_latest_copy_has_no_known_place_is_not_translated():
    translation = a_map((0, 0, 10), (5, -1, 5)).translate(7, replicated_to=10)
    assert translation.target is None
    assert "did not say where" in translation.reason


def test_trimming_keeps_only_spans_that_reach_the_log_start():
    partition = a_map((0, 0, 10), (20, 10, 10), (40, 20, 10))
    assert partition.trimmed(25).spans == [Span(20, 10, 10), Span(40, 20, 10)]


class Acknowledged:
    """A shipment as the producer hands it back: source runs of `origin`, written at `offset`."""

    def __init__(self, source, first, count, offset):
        self.origin, self.tp, self.runs, self.offset = source, TARGET, ((first, count),), offset


def a_writer(clock=lambda: 0.0, slow=lambda seconds: None):
    sent = []
    return MapWriter(Journal("cluster-a"), sent.append, slow, clock), sent


def test_positions_wait_for_the_map_write_that_covers_them():
    writer, sent = a_writer()
    writer.written(Acknowledged(SOURCE, 0, 10, 0))
    writer.start({SOURCE: 10})

    assert writer.ready() is None
    [shipment] = sent
    shipment.delivery.part_written()
    assert writer.ready() == {SOURCE: 10}


def test_positions_with_nothing_new_to_map_are_ready_at_once():
    writer, sent = a_writer()
    writer.start({SOURCE: 10})
    assert sent == []
    assert writer.ready() == {SOURCE: 10}


def test_the_map_write_carries_every_span_journaled_before_it():
    writer, sent = a_writer()
    writer.written(Acknowledged(SOURCE, 0, 10, 0))
    writer.written(Acknowledged(SOURCE, 10, 5, 10))
    writer.written(Acknowledged(Partition("orders", 3), 0, 4, 100))
    writer.start({})
    [shipment] = sent
    written = {entry.span for entry in (Entry.decode(r.key, r.value) for r in records_of(shipment.data))}
    assert written == {Span(0, 0, 15), Span(0, 100, 4)}


def test_a_refused_map_write_stops_every_later_commit():
    writer, sent = a_writer()
    writer.written(Acknowledged(SOURCE, 0, 10, 0))
    writer.start({SOURCE: 10})
    sent[0].delivery.fail(TopicAuthorizationFailedError())

    with pytest.raises(MapWriteRefused):
        writer.ready()
    writer.start({SOURCE: 20})
    with pytest.raises(MapWriteRefused):
        writer.ready()


def test_positions_of_partitions_gone_to_another_member_are_not_committed():
    writer, sent = a_writer()
    writer.written(Acknowledged(SOURCE, 0, 10, 0))
    writer.start({SOURCE: 10, Partition("orders", 3): 7})
    writer.forget([SOURCE])
    sent[0].delivery.part_written()
    assert writer.ready() == {Partition("orders", 3): 7}


def test_a_map_write_pending_for_a_minute_is_reported_once_a_minute():
    now = [0.0]
    reported = []
    writer, _ = a_writer(clock=lambda: now[0], slow=reported.append)
    writer.written(Acknowledged(SOURCE, 0, 10, 0))
    writer.start({SOURCE: 10})
    for now[0] in (30.0, 61.0, 90.0, 125.0):
        assert writer.ready() is None
    assert reported == [61.0, 125.0]
