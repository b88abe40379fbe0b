"""verify's comparison of a partition with its copy, on batches built here: replays, copies the
map does not name yet, records sent back, gaps."""

from __future__ import annotations

from batch_support import make, rec
from replicator.offset_map import Span
from replicator.partition_log import Chunk
from replicator.verification import PartitionVerdict, Sides, Writers, check_partition

REPLICATOR = 7  # the producer id a replicator wrote the copies with


class Log:
    """A partition's batches, handed out as PartitionLog does."""

    log_start = 0

    def __init__(self, *batches):
        self.batches = batches

    def chunks(self, start: int, end: int):
        for batch in self.batches:
            first, stop = max(batch.base_offset, start), min(batch.next_offset, end)
            if first < stop:
                yield Chunk(batch, first, stop)


def values(first: int, count: int, base_offset: int, producer_id: int = -1, value: bytes = b"v"):
    return make([rec(i, f"k{first + i}".encode(), value) for i in range(count)], base_offset=base_offset,
                producer_id=producer_id)


def check(source: Log, target: Log, spans: list[Span], copied_to: int, target_end: int,
          registered=(REPLICATOR,), source_start: int = 0) -> PartitionVerdict:
    verdict = PartitionVerdict("sourceToTarget", "t", 0, "t", copied_to)
    sides = Sides(source, target, source_start, 0, target_end, False, False)
    writers = Writers(lambda producer: producer in registered, lambda producer: producer in registered,
                      lambda fields: False, False)
    check_partition(verdict, spans, sides, writers)
    return verdict


def test_records_copied_again_after_a_crash_are_compared_and_counted_not_mismatched():
    source = Log(values(0, 10, 0))
    target = Log(values(0, 10, 0, REPLICATOR), values(5, 5, 10, REPLICATOR + 1))
    verdict = check(source, target, [Span(0, 0, 10), Span(5, 10, 5)], 10, 15)
    assert (verdict.compared, verdict.copied_twice, verdict.mismatches) == (15, 5, 0)


def test_a_copy_written_by_a_replicator_but_not_in_the_map_is_counted_not_extra():
    source = Log(values(0, 15, 0))
    target = Log(values(0, 10, 0, REPLICATOR), values(10, 5, 10, REPLICATOR))
    verdict = check(source, target, [Span(0, 0, 10)], 10, 15)
    assert (verdict.compared, verdict.unmapped_copies, verdict.mismatches) == (10, 5, 0)


def test_records_between_copies_from_another_writer_are_one_run_of_extras():
    source = Log(values(0, 20, 0))
    target = Log(values(0, 10, 0, REPLICATOR), values(0, 3, 10, producer_id=99), values(10, 10, 13, REPLICATOR))
    verdict = check(source, target, [Span(0, 0, 10), Span(10, 13, 10)], 20, 23)
    assert (verdict.compared, verdict.extra) == (20, 3)
    assert [(d.kind, d.source_offset, d.target_offset, d.count) for d in verdict.discrepancies] == \
        [("extra", None, 10, 3)]


def test_source_records_a_replicator_wrote_there_are_not_missing_but_others_in_the_gap_are():
    source = Log(values(0, 5, 0), values(5, 5, 5, REPLICATOR), values(10, 2, 10, producer_id=99),
                 values(12, 3, 12))
    target = Log(values(0, 5, 0, REPLICATOR), values(12, 3, 5, REPLICATOR))
    verdict = check(source, target, [Span(0, 0, 5), Span(12, 5, 3)], 15, 8)
    assert (verdict.compared, verdict.sent_back, verdict.missing) == (8, 5, 2)
    assert [(d.kind, d.source_offset, d.target_offset, d.count, d.what) for d in verdict.discrepancies] == \
        [("missing", 10, None, 2, "not copied")]


def test_a_copy_merged_from_several_source_batches_is_compared_record_by_record():
    source = Log(values(0, 3, 0), values(3, 3, 3), values(6, 4, 6))
    target = Log(make([rec(i, f"k{i}".encode(), b"v" if i != 7 else b"w") for i in range(10)],
                      producer_id=REPLICATOR))
    verdict = check(source, target, [Span(0, 0, 10)], 10, 10)
    assert (verdict.compared, verdict.altered) == (10, 1)
    assert [(d.source_offset, d.target_offset, d.what) for d in verdict.discrepancies] == [(7, 7, "value differs")]


def test_copies_of_records_retention_deleted_at_the_source_are_gone_there_not_mismatched():
    source = Log(values(5, 5, 5))
    target = Log(values(0, 10, 0, REPLICATOR))
    verdict = check(source, target, [Span(0, 0, 10)], 10, 10, source_start=5)
    assert (verdict.compared, verdict.gone_at_source, verdict.mismatches) == (5, 5, 0)


def test_a_copy_mapped_to_a_source_offset_that_holds_no_record_is_extra():
    source = Log(values(0, 5, 0), values(6, 4, 6))
    target = Log(values(0, 10, 0, REPLICATOR))
    verdict = check(source, target, [Span(0, 0, 10)], 10, 10)
    assert (verdict.compared, verdict.extra) == (9, 1)
    assert [(d.kind, d.source_offset, d.target_offset, d.what) for d in verdict.discrepancies] == \
        [("extra", 5, 5, "its source offset holds no record")]
