"""How fetched batches become shipments: copy, merge, re-encode (with its reason) or skip."""

from __future__ import annotations

from kafka import TopicPartition

from replicator import batches
from replicator.provenance import HOPS, ORIGIN, Provenance
from replicator.shipping import Shipper, Target

from batch_support import make, rec

OURS = 42
TP = TopicPartition("orders", 0)
PRESERVE = Target("copy", partitions=3, partition=1)
HASHED = Target("copy", partitions=2, partition=None)


def shipper(mode="batch", merge_below=0, max_batch=1 << 20):
    fallbacks = []
    s = Shipper(mode, "none", batch_bytes=1 << 18, max_batch_bytes=max_batch, merge_below=merge_below,
                is_ours=lambda pid: pid == OURS, provenance=Provenance("source-id", "target-id"),
                on_fallback=lambda tp, reason: fallbacks.append(reason))
    return s, fallbacks


def written(step) -> list:
    found = []
    for shipment in step.shipments:
        data = bytes(shipment.copy.data) if shipment.copy is not None else shipment.data
        for batch in batches.split(data):
            found += [(r.key, r.headers) for r in batches.records(batch)]
    return found


def test_a_full_batch_is_copied_as_bytes_to_the_same_partition():
    s, fallbacks = shipper()
    batch = make([rec(0), rec(1)], base_offset=10)
    [step] = s.plan(TP, PRESERVE, 10, [batch], [])
    assert step.how == "copy" and (step.first, step.next) == (10, 12)
    [shipment] = step.shipments
    assert shipment.copy is batch and shipment.tp.partition == 1
    assert fallbacks == []


def test_small_batches_are_merged_into_one_covering_their_whole_range():
    s, _ = shipper(merge_below=10_000)
    fetched = [make([rec(0, f"k{i}".encode())], base_offset=i) for i in range(5)]
    [step] = s.plan(TP, PRESERVE, 0, fetched, [])
    assert step.how == "merge" and (step.first, step.next) == (0, 5)
    assert [key for key, _ in written(step)] == [b"k0", b"k1", b"k2", b"k3", b"k4"]


def sixteen_kib_batches(count: int) -> list:
    """Batches the Kafka producer's default batch.size gives: 16 records of 1 KiB each."""
    return [make([rec(i * 16 + j, f"k{i * 16 + j}".encode(), bytes(1000)) for j in range(16)], base_offset=i * 16)
            for i in range(count)]


def test_a_partition_fetched_with_a_full_batchs_worth_of_16_kib_batches_merges_them():
    s, _ = shipper(merge_below=4096)
    fetched = sixteen_kib_batches(20)  # 20 × 16 KiB: more than one 256 KiB batch's worth
    steps = s.plan(TP, PRESERVE, 0, fetched, [])
    assert {step.how for step in steps} == {"merge"}
    shipments = [shipment for step in steps for shipment in step.shipments]
    assert len(shipments) == 2 and all(shipment.copy is None for shipment in shipments)
    assert (steps[0].first, steps[-1].next) == (0, 320)
    assert [key for step in steps for key, _ in written(step)] == [f"k{i}".encode() for i in range(320)]


def test_16_kib_batches_are_copied_when_their_partition_brought_less_than_a_full_batch():
    s, _ = shipper(merge_below=4096)
    fetched = sixteen_kib_batches(3)  # 48 KiB: as at 1 × 3,000 partitions, many partitions fill a request
    steps = s.plan(TP, PRESERVE, 0, fetched, [])
    assert [step.how for step in steps] == ["copy", "copy", "copy"]
    assert [step.shipments[0].copy for step in steps] == fetched


def test_our_own_batches_are_skipped_and_counted_as_loops():
    s, _ = shipper()
    fetched = [make([rec(0), rec(1)], base_offset=0, producer_id=OURS),
               make([rec(0)], base_offset=2, producer_id=7)]
    skip, copy = s.plan(TP, PRESERVE, 0, fetched, [])
    assert (skip.how, skip.shipments, skip.loop_skipped, skip.next) == ("skip", [], 2, 2)
    assert copy.how == "copy"


def test_aborted_batches_are_skipped_without_counting_as_loops():
    s, _ = shipper()
    aborted = make([rec(0)], base_offset=0, attributes=batches.TRANSACTIONAL, producer_id=9)
    [step] = s.plan(TP, PRESERVE, 0, [aborted], aborted=[(9, 0)])
    assert step.how == "skip" and step.loop_skipped == 0


def test_a_batch_begun_before_the_position_is_re_encoded_from_the_position_on():
    s, fallbacks = shipper()
    batch = make([rec(0, b"a"), rec(1, b"b"), rec(2, b"c")], base_offset=20)
    [step] = s.plan(TP, PRESERVE, 21, [batch], [])
    assert step.how == "encode" and (step.first, step.next) == (21, 23)
    assert [key for key, _ in written(step)] == [b"b", b"c"]
    assert fallbacks == ["the batch begins before the partition's position"]


def test_a_log_append_time_batch_is_re_encoded_with_its_reason():
    s, fallbacks = shipper()
    batch = make([rec(0)], attributes=batches.LOG_APPEND_TIME)
    [step] = s.plan(TP, PRESERVE, 0, [batch], [])
    assert step.how == "encode" and fallbacks == ["the source topic uses LogAppendTime"]


def test_a_hashed_target_spreads_records_by_key_hash():
    s, fallbacks = shipper()
    batch = make([rec(i, f"key-{i}".encode()) for i in range(20)])
    [step] = s.plan(TP, HASHED, 0, [batch], [])
    assert {shipment.tp.partition for shipment in step.shipments} == {0, 1}
    assert step.delivery.parts == len(step.shipments)
    assert "hashed" in fallbacks[0]


def test_a_batch_over_the_request_limit_is_re_encoded():
    s, fallbacks = shipper(max_batch=100)
    [step] = s.plan(TP, PRESERVE, 0, [make([rec(0, value=b"x" * 500)])], [])
    assert step.how == "encode" and "maxRequestSize" in fallbacks[0]


def test_record_mode_adds_provenance_headers_and_drops_records_from_the_target():
    s, fallbacks = shipper(mode="record")
    mine = [(ORIGIN, b"target-id"), (HOPS, b"1")]
    batch = make([rec(0, b"new", headers=[("h", b"x")]), rec(1, b"back", headers=mine)])
    [step] = s.plan(TP, PRESERVE, 0, [batch], [])
    assert written(step) == [(b"new", [("h", b"x"), (ORIGIN, b"source-id"), (HOPS, b"1")])]
    assert step.loop_skipped == 1 and fallbacks == []


def test_record_mode_into_a_hashed_target_adds_provenance_headers_to_every_record():
    s, _ = shipper(mode="record")
    batch = make([rec(i, f"k{i}".encode()) for i in range(6)])
    [step] = s.plan(TP, HASHED, 0, [batch], [])
    assert sorted(written(step)) == [(f"k{i}".encode(), [(ORIGIN, b"source-id"), (HOPS, b"1")]) for i in range(6)]
    assert {shipment.tp.partition for shipment in step.shipments} == {0, 1}


def test_below_the_singles_offset_each_record_is_its_own_shipment_and_range():
    s, _ = shipper()
    batch = make([rec(0, b"a"), rec(1, b"b"), rec(2, b"c")], base_offset=5)
    steps = s.plan(TP, PRESERVE, 5, [batch], [], singles_until=8)
    assert [(st.first, st.next, len(st.shipments)) for st in steps] == [(5, 6, 1), (6, 7, 1), (7, 8, 1)]


def test_record_mode_re_encodes_consecutive_batches_together():
    s, _ = shipper(mode="record")
    fetched = [make([rec(0, f"k{i}".encode())], base_offset=i) for i in range(3)]
    [step] = s.plan(TP, PRESERVE, 0, fetched, [])
    assert step.how == "merge" and len(step.shipments) == 1 and step.records == 3
