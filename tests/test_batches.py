"""Record batches as bytes: split, rewritten header fields, built batches, committed reads."""

from __future__ import annotations

import struct

import pytest
from kafka.record import MemoryRecords

from batch_support import make, rec
from replicator import batches


def decoded(data: bytes) -> list[tuple]:
    """What kafka-python's own decoder reads in a batch: an independent check of ours."""
    batch = MemoryRecords(data).next_batch()
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch]


def test_split_reads_every_header_field():
    batch = make([rec(0), rec(1), rec(2)], base_offset=40, producer_id=7, producer_epoch=2,
                 base_sequence=11)
    assert (batch.base_offset, batch.last_offset, batch.next_offset) == (40, 42, 43)
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (7, 2, 11)
    assert batch.record_count == 3 and batch.magic == 2


def test_split_leaves_out_a_truncated_last_batch():
    whole = bytes(make([rec(0)], base_offset=0).data)
    second = bytes(make([rec(0)], base_offset=1).data)
    assert [b.base_offset for b in batches.split(whole + second[:-5])] == [0]


def test_rewrite_sets_base_offset_zero_and_keeps_the_records_byte_for_byte():
    batch = make([rec(0, b"a", b"1"), rec(1, b"b", b"2")], base_offset=900)
    out = batches.rewrite(batch, producer_id=5, producer_epoch=0, base_sequence=0)
    assert struct.unpack_from(">q", out, 0)[0] == 0
    assert out[batches.HEADER_SIZE:] == bytes(batch.data[batches.HEADER_SIZE:])


def test_rewrite_sets_our_producer_id_epoch_and_sequence():
    batch = make([rec(0)], producer_id=77, producer_epoch=3, base_sequence=12)
    [out] = batches.split(batches.rewrite(batch, producer_id=5, producer_epoch=1, base_sequence=40))
    assert (out.producer_id, out.producer_epoch, out.base_sequence) == (5, 1, 40)


def test_rewrite_clears_the_transactional_bit_and_keeps_compression():
    batch = make([rec(0)], attributes=batches.TRANSACTIONAL, producer_id=9, codec="lz4")
    [out] = batches.split(batches.rewrite(batch, 5, 0, 0))
    assert not out.is_transactional
    assert out.attributes & batches.COMPRESSION_MASK == batches.CODECS["lz4"]


def test_rewrite_computes_a_crc_that_matches_the_new_header():
    batch = make([rec(0), rec(1)], base_offset=3, producer_id=9)
    [out] = batches.split(batches.rewrite(batch, 5, 0, 100))
    assert batches.crc_ok(out)
    assert MemoryRecords(bytes(out.data)).next_batch().validate_crc()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_encoded_batches_decode_the_same_in_kafka_python(codec):
    records = [rec(0, b"k", b"v", [("h", b"x"), ("n", None)], 5_000), rec(1, None, None, [], 5_007),
               rec(2, b"", b"\x00\xff" * 300, [], 946_684_800_000)]
    data = batches.encode(records, codec)
    assert decoded(data) == [(i, r.timestamp, r.key, r.value, r.headers) for i, r in enumerate(records)]
    [batch] = batches.split(data)
    assert [(r.key, r.value, r.headers, r.timestamp) for r in batches.records(batch)] == \
        [(r.key, r.value, r.headers, r.timestamp) for r in records]


def test_records_of_a_log_append_time_batch_take_the_batch_timestamp():
    batch = make([rec(0, timestamp=10), rec(1, timestamp=20)], attributes=batches.LOG_APPEND_TIME)
    data = bytearray(batch.data)
    struct.pack_into(">q", data, 35, 99_999)  # the broker's append time
    [batch] = batches.split(bytes(data))
    assert [r.timestamp for r in batches.records(batch)] == [99_999, 99_999]


@pytest.mark.parametrize("change, reason", [
    ({"attributes": batches.LOG_APPEND_TIME}, "LogAppendTime"),
    ({"attributes": batches.DELETE_HORIZON}, "delete horizon"),
    ({"last_offset_delta": 5}, "offset gaps"),
    ({"base_offset": 8}, "begins before the partition's position"),
])
def test_a_batch_that_cannot_be_copied_says_why(change, reason):
    batch = make([rec(0), rec(1)], **{"base_offset": 10, **change})
    assert reason in batch.obstacle(position=10 if "base_offset" not in change else 9)


def test_a_plain_batch_at_the_position_can_be_copied():
    assert make([rec(0), rec(1)], base_offset=10).obstacle(position=10) is None


def _marker(offset: int, producer_id: int, abort: bool) -> batches.Batch:
    key = struct.pack(">hh", 0, 0 if abort else 1)
    return make([rec(0, key, b"\x00\x00\x00\x00\x00\x00")], base_offset=offset,
                attributes=batches.TRANSACTIONAL | batches.CONTROL, producer_id=producer_id)


def test_read_committed_drops_aborted_transactions_and_markers_and_keeps_committed_ones():
    committed_tx = make([rec(0)], base_offset=0, attributes=batches.TRANSACTIONAL, producer_id=1)
    aborted_tx = make([rec(0)], base_offset=1, attributes=batches.TRANSACTIONAL, producer_id=2)
    plain = make([rec(0)], base_offset=4)
    fetched = [committed_tx, aborted_tx, _marker(2, 1, abort=False), _marker(3, 2, abort=True), plain]
    readable = [(b.base_offset, ok) for b, ok in batches.readable(fetched, aborted=[(2, 1)])]
    assert readable == [(0, True), (1, False), (2, False), (3, False), (4, True)]


def test_a_producer_is_no_longer_aborting_after_its_abort_marker():
    first = make([rec(0)], base_offset=0, attributes=batches.TRANSACTIONAL, producer_id=2)
    later = make([rec(0)], base_offset=2, attributes=batches.TRANSACTIONAL, producer_id=2)
    fetched = [first, _marker(1, 2, abort=True), later]
    assert [ok for _, ok in batches.readable(fetched, aborted=[(2, 0)])] == [False, False, True]


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_record_fields_give_offsets_timestamps_and_fields_that_decode_to_the_records(codec):
    records = [rec(0, b"k", b"v", [("h", b"x"), ("n", None)], 5_000), rec(1, None, None, [], 5_007),
               rec(2, b"", b"\x00\xff" * 300, [], 946_684_800_000)]
    batch = make(records, base_offset=70, codec=codec)
    fields = batches.record_fields(batch)
    assert [(offset, timestamp) for offset, timestamp, _ in fields] == [(70, 5_000), (71, 5_007),
                                                                        (72, 946_684_800_000)]
    assert [batches.decode_fields(raw) for _, _, raw in fields] == [(r.key, r.value, r.headers) for r in records]
    assert [raw for _, _, raw in fields] == [batches.encode_fields(r.key, r.value, r.headers) for r in records]


def test_record_fields_of_records_that_differ_in_one_header_differ():
    one = batches.record_fields(make([rec(0, headers=[("h", b"x")])]))
    other = batches.record_fields(make([rec(0, headers=[("h", b"y")])]))
    assert one[0][2] != other[0][2]


def test_headers_at_finds_the_headers_after_any_key_and_value():
    for key, value in ((b"k", b"v"), (None, None), (b"k" * 200, b""), (b"", b"v" * 70_000)):
        headers = [("h", b"x"), ("n", None)]
        fields = batches.encode_fields(key, value, headers)
        end, count, first = batches.headers_at(fields)
        assert fields[:end] == batches.encode_fields(key, value, [])[:end]
        assert (count, fields[first:]) == (2, batches.encode_headers(headers))


def merged_records(merged: list[batches.Merged]) -> list[tuple]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers)
            for m in merged for r in batches.records(batches.split(m.data)[0])]


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_merge_keeps_each_records_key_value_headers_and_timestamp(codec):
    first = make([rec(0, b"a", b"1", [("h", b"x")], 5_000), rec(1, None, b"2", [], 4_990)], base_offset=10,
                 codec=codec)
    second = make([rec(0, b"c", None, [("n", None)], 5_020)], base_offset=12, codec=codec)
    [merged] = batches.merge([first, second], 10, codec, 1 << 18)
    assert merged_records([merged]) == [(0, 5_000, b"a", b"1", [("h", b"x")]), (1, 4_990, None, b"2", []),
                                        (2, 5_020, b"c", None, [("n", None)])]
    assert (merged.count, merged.max_timestamp, merged.runs) == (3, 5_020, ((10, 3),))


def test_a_merged_batch_decodes_the_same_in_kafka_python():
    fetched = [make([rec(0, b"k%d" % i, b"v" * 200, [], 7_000 + i)], base_offset=i) for i in range(300)]
    [merged] = batches.merge(fetched, 0, "none", 1 << 18)
    stamped = batches.stamp(merged.data, 5, 0, 0)
    assert MemoryRecords(stamped).next_batch().validate_crc()
    assert decoded(stamped) == [(i, 7_000 + i, b"k%d" % i, b"v" * 200, []) for i in range(300)]


def test_merge_leaves_out_records_before_the_position():
    batch = make([rec(0, b"a"), rec(1, b"b"), rec(2, b"c")], base_offset=20)
    [merged] = batches.merge([batch], 22, "none", 1 << 18)
    assert [key for _, _, key, _, _ in merged_records([merged])] == [b"c"]
    assert merged.runs == ((22, 1),)


def test_merge_cuts_new_batches_at_the_limit_and_keeps_the_order():
    fetched = [make([rec(0, b"%03d" % i, b"v" * 100)], base_offset=i) for i in range(50)]
    merged = batches.merge(fetched, 0, "none", 1_000)
    assert len(merged) > 1 and all(len(m.data) - batches.HEADER_SIZE <= 1_000 for m in merged)
    assert [key for _, _, key, _, _ in merged_records(merged)] == [b"%03d" % i for i in range(50)]
    assert [m.runs[0][0] for m in merged] == [0] + [sum(m.count for m in merged[:i]) for i in range(1, len(merged))]


def test_merge_writes_each_records_fields_as_rewritten_and_leaves_out_the_dropped():
    fetched = [make([rec(0, b"a"), rec(1, b"drop"), rec(2, b"c", headers=[("h", b"x")])], base_offset=3)]

    def rewrite(fields: bytes) -> bytes | None:
        key, _, headers = batches.decode_fields(fields)
        return None if key == b"drop" else batches.encode_fields(key, key.upper(), headers + [("new", b"1")])
    [merged] = batches.merge(fetched, 0, "none", 1 << 18, rewrite)
    assert merged_records([merged]) == [(0, 1_000, b"a", b"A", [("new", b"1")]),
                                        (1, 1_000, b"c", b"C", [("h", b"x"), ("new", b"1")])]
    assert merged.runs == ((3, 1), (5, 1))


def test_merge_reads_timestamp_and_offset_deltas_of_one_two_and_three_bytes():
    records = [rec(i, b"%d" % i, timestamp=1_000 + 20 * i) for i in range(9_000)]
    [merged] = batches.merge([make(records, base_offset=50)], 0, "none", 1 << 20)
    assert [(t, k) for _, t, k, _, _ in merged_records([merged])] == [(1_000 + 20 * i, b"%d" % i) for i in range(9_000)]
    assert merged.runs == ((50, 9_000),)


def test_merge_names_the_offset_runs_around_a_compacted_gap():
    fetched = [make([rec(0, b"a")], base_offset=3), make([rec(0, b"b")], base_offset=4),
               make([rec(0, b"c")], base_offset=9)]
    [merged] = batches.merge(fetched, 0, "none", 1 << 18)
    assert merged.runs == ((3, 2), (9, 1))


def test_merge_gives_log_append_time_records_the_batch_timestamp():
    batch = make([rec(0, timestamp=10), rec(1, timestamp=20)], attributes=batches.LOG_APPEND_TIME)
    data = bytearray(batch.data)
    struct.pack_into(">q", data, 35, 99_999)
    [merged] = batches.merge(batches.split(bytes(data)), 0, "none", 1 << 18)
    assert [timestamp for _, timestamp, _, _, _ in merged_records([merged])] == [99_999, 99_999]
