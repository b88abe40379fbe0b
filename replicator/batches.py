"""Kafka record batches (magic v2) as bytes: read their headers, rewrite them, build new ones.

A batch copied to another cluster keeps its records byte for byte; only the header's
base offset, producer id/epoch, base sequence and the transactional bit change, and
the CRC-32C over everything after the CRC is computed again. Plain Python on bytes:
nothing here talks to Kafka (compression codecs come from kafka-python, via `wire`).

Layout of a v2 batch header (61 bytes, big-endian)::

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 |
    crc uint32 | attributes int16 | lastOffsetDelta int32 | baseTimestamp int64 |
    maxTimestamp int64 | producerId int64 | producerEpoch int16 | baseSequence int32 |
    recordCount int32 | records...
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterator

from crc32c import crc32c

from .wire import COMPRESS, DECOMPRESS, legacy_records

HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
_LENGTH = struct.Struct(">qi")
_CRC_AT = 17
_ATTRIBUTES_AT = 21
_WRITER = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence at byte 43
_WRITER_AT = 43

COMPRESSION_MASK = 0x07
LOG_APPEND_TIME = 0x08
TRANSACTIONAL = 0x10
CONTROL = 0x20
DELETE_HORIZON = 0x40

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

NO_PRODUCER = -1


@dataclass(slots=True)  # not frozen: a frozen dataclass is 7x slower to make, once per batch
class Batch:
    """One batch as fetched: its header fields and its bytes."""

    base_offset: int
    magic: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    data: memoryview
    size: int  # len(data), asked several times per batch

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL)

    @property
    def whole(self) -> bool:
        """False for a last batch that `split(..., truncated=True)` kept though cut short."""
        return len(self.data) == _LENGTH.unpack_from(self.data, 0)[1] + 12

    def obstacle(self, position: int) -> str | None:
        """Why this batch cannot be copied as bytes when reading from `position`, or None."""
        if self.magic != 2:
            return f"message format v{self.magic}"
        if self.base_offset < position:
            return "the batch begins before the partition's position"
        if self.attributes & LOG_APPEND_TIME:
            return "the source topic uses LogAppendTime"
        if self.attributes & DELETE_HORIZON:
            return "the log cleaner set the batch's delete horizon"
        if self.record_count != self.last_offset_delta + 1:
            return "the log cleaner left offset gaps inside the batch"
        return None


def split(data: bytes | memoryview, truncated: bool = False) -> list[Batch]:
    """The whole batches in a fetched record set; a truncated last batch is left out, unless
    `truncated` and its v2 header came whole (its `data` is then what came)."""
    view = memoryview(data)
    batches = []
    at, end = 0, len(view)
    unpack_length = _LENGTH.unpack_from
    unpack = HEADER.unpack_from
    while at + 12 <= end:
        _, length = unpack_length(view, at)
        size = length + 12
        if at + size > end:
            if not (truncated and at + HEADER_SIZE <= end and view[at + 16] == 2):
                break
            size = end - at
        if view[at + 16] == 2:
            (base_offset, _, _, magic, _, attributes, last_delta, base_ts, max_ts, producer_id,
             producer_epoch, base_sequence, count) = unpack(view, at)
        else:  # message format v0/v1: one (wrapper) message; only copied through records()
            base_offset = unpack_length(view, at)[0]
            magic, attributes, last_delta, base_ts, max_ts = view[at + 16], 0, 0, -1, -1
            producer_id, producer_epoch, base_sequence, count = NO_PRODUCER, -1, -1, 1
        batches.append(Batch(base_offset, magic, attributes, last_delta, base_ts, max_ts,
                             producer_id, producer_epoch, base_sequence, count,
                             view[at:at + size], size))
        at += size
    return batches


def rewrite(batch: Batch, producer_id: int, producer_epoch: int, base_sequence: int,
            transactional: bool = False) -> bytes:
    """The batch as our producer writes it: base offset 0, our writer fields, a fresh CRC.

    The transactional bit is ours to set: the target never sees the source's transaction
    markers, so a committed source transaction's batch is copied as a plain batch, or as
    part of our own transaction.
    """
    data = bytearray(batch.data)
    _LENGTH.pack_into(data, 0, 0, len(data) - 12)
    attributes = batch.attributes & ~TRANSACTIONAL
    struct.pack_into(">h", data, _ATTRIBUTES_AT, attributes | TRANSACTIONAL if transactional else attributes)
    _WRITER.pack_into(data, _WRITER_AT, producer_id, producer_epoch, base_sequence)
    struct.pack_into(">I", data, _CRC_AT, crc32c(memoryview(data)[_ATTRIBUTES_AT:]))
    return bytes(data)


def stamp(data: bytes, producer_id: int, producer_epoch: int, base_sequence: int,
          transactional: bool = False) -> bytes:
    """A batch built by `encode` given its writer fields (they are known only when sent)."""
    out = bytearray(data)
    if transactional:
        attributes = struct.unpack_from(">h", out, _ATTRIBUTES_AT)[0]
        struct.pack_into(">h", out, _ATTRIBUTES_AT, attributes | TRANSACTIONAL)
    _WRITER.pack_into(out, _WRITER_AT, producer_id, producer_epoch, base_sequence)
    struct.pack_into(">I", out, _CRC_AT, crc32c(memoryview(out)[_ATTRIBUTES_AT:]))
    return bytes(out)


def crc_ok(batch: Batch) -> bool:
    stored = struct.unpack_from(">I", batch.data, _CRC_AT)[0]
    return stored == crc32c(batch.data[_ATTRIBUTES_AT:])


# Records -------------------------------------------------------------------------------

@dataclass(slots=True)
class Record:
    """One record of a batch, decoded."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def _varint(data, at: int) -> tuple[int, int]:
    """A zigzag varint (int32 or int64) at `at`: (value, next position)."""
    shift = result = 0
    while True:
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), at
        shift += 7


def _put_varint(out: bytearray, value: int) -> None:
    value = (value << 1) ^ (value >> 63)
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def varint_bytes(value: int) -> bytes:
    out = bytearray()
    _put_varint(out, value)
    return bytes(out)


_MOST_RECORD_HEAD = 17  # a record's length, attributes, timestamp and offset deltas at their longest
SMALL = 1 << 13  # what most deltas and record lengths of a merge are under: 2 bytes or less
_SMALL_VARINTS = [varint_bytes(value) for value in range(SMALL)]


def _bytes(data, at: int) -> tuple[bytes | None, int]:
    length, at = _varint(data, at)
    if length < 0:
        return None, at
    return bytes(data[at:at + length]), at + length


def records(batch: Batch) -> list[Record]:
    """The batch's records (never a control batch's), decompressed and decoded."""
    if batch.magic != 2:
        return _legacy_records(batch)
    body = batch.data[HEADER_SIZE:]
    codec = batch.attributes & COMPRESSION_MASK
    if codec:
        body = memoryview(DECOMPRESS[codec](body.tobytes()))
    log_append = batch.attributes & LOG_APPEND_TIME
    # With a delete horizon the base timestamp holds it, not the first record's time.
    base_ts = batch.base_timestamp
    out = []
    at = 0
    for _ in range(batch.record_count):
        length, at = _varint(body, at)
        end = at + length
        at += 1  # record attributes: unused
        ts_delta, at = _varint(body, at)
        offset_delta, at = _varint(body, at)
        key, at = _bytes(body, at)
        value, at = _bytes(body, at)
        count, at = _varint(body, at)
        headers = []
        for _ in range(count):
            name, at = _bytes(body, at)
            header_value, at = _bytes(body, at)
            headers.append((name.decode(), header_value))
        at = end
        timestamp = batch.max_timestamp if log_append else base_ts + ts_delta
        out.append(Record(batch.base_offset + offset_delta, timestamp, key, value, headers))
    return out


def timestamp_at(batch: Batch, offset: int) -> int | None:
    """The timestamp of the batch's first record at or after `offset`, without decoding
    the records (a v2 batch's records are walked to it); None when the batch has none.

    A batch `split(..., truncated=True)` cut short answers with what came: a compressed
    one, or one whose record did not come, with its base timestamp (the first record's,
    as Kafka's producers write it).
    """
    if batch.last_offset < offset:
        return None
    if batch.magic != 2:
        if not batch.whole:
            return None
        return next((r.timestamp for r in _legacy_records(batch) if r.offset >= offset), None)
    if batch.attributes & LOG_APPEND_TIME:
        return batch.max_timestamp
    codec = batch.attributes & COMPRESSION_MASK
    if codec and not batch.whole:
        return batch.base_timestamp
    body = batch.data[HEADER_SIZE:]
    if codec:
        body = memoryview(DECOMPRESS[codec](body.tobytes()))
    at, end = 0, len(body)
    try:
        for _ in range(batch.record_count):
            length, at = _varint(body, at)
            record_end = at + length
            ts_delta, at = _varint(body, at + 1)  # after the record's attributes
            offset_delta, at = _varint(body, at)
            if batch.base_offset + offset_delta >= offset:
                return batch.base_timestamp + ts_delta
            at = record_end
            if at >= end:
                break
    except IndexError:  # cut short inside the record
        pass
    return batch.base_timestamp if not batch.whole else None


def _legacy_records(batch: Batch) -> list[Record]:
    return [Record(offset, timestamp, key, value, [])
            for offset, timestamp, key, value in legacy_records(bytes(batch.data))]


def record_fields(batch: Batch) -> list[tuple[int, int, bytes]]:
    """Each record's offset, timestamp, and its key, value and headers as encoded.

    Two records with the same fields encode them alike, so one comparison of bytes tells
    them apart: a comparison of copies costs one varint walk per record, not a decode.
    """
    if batch.magic != 2:
        return [(r.offset, r.timestamp, encode_fields(r.key, r.value, r.headers))
                for r in _legacy_records(batch)]
    body = batch.data[HEADER_SIZE:]
    codec = batch.attributes & COMPRESSION_MASK
    if codec:
        body = memoryview(DECOMPRESS[codec](body.tobytes()))
    log_append = batch.attributes & LOG_APPEND_TIME
    base_ts, base_offset = batch.base_timestamp, batch.base_offset
    out = []
    append = out.append
    at = 0
    for _ in range(batch.record_count):
        length, at = _varint(body, at)
        end = at + length
        ts_delta, at = _varint(body, at + 1)  # after the record's attributes
        byte = body[at]
        if byte < 0x80:  # an offset delta below 64: one byte
            offset_delta, at = (byte >> 1) ^ -(byte & 1), at + 1
        else:
            offset_delta, at = _varint(body, at)
        append((base_offset + offset_delta, batch.max_timestamp if log_append else base_ts + ts_delta,
                bytes(body[at:end])))
        at = end
    return out


def decode_fields(fields: bytes) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
    """Key, value and headers from what `record_fields` gives."""
    key, at = _bytes(fields, 0)
    value, at = _bytes(fields, at)
    count, at = _varint(fields, at)
    headers = []
    for _ in range(count):
        name, at = _bytes(fields, at)
        header_value, at = _bytes(fields, at)
        headers.append((name.decode(), header_value))
    return key, value, headers


def headers_at(fields: bytes) -> tuple[int, int, int]:
    """Where `record_fields`' fields hold the headers: the end of the key and value, the
    header count, and where the first header begins."""
    at = 0
    for _ in range(2):  # the key, then the value; most lengths take one byte
        byte = fields[at]
        length, at = ((byte >> 1) ^ -(byte & 1), at + 1) if byte < 0x80 else _varint(fields, at)
        if length > 0:
            at += length
    byte = fields[at]
    count, first = ((byte >> 1) ^ -(byte & 1), at + 1) if byte < 0x80 else _varint(fields, at)
    return at, count, first


def has_header(fields: bytes, first: int, count: int, names: tuple[bytes, ...]) -> bool:
    """Whether one of the `count` headers that begin at `first` (see `headers_at`) has one of
    `names` (encoded)."""
    at = first
    for _ in range(count):
        length, at = _varint(fields, at)
        if fields[at:at + length] in names:
            return True
        length, at = _varint(fields, at + length)
        if length > 0:
            at += length
    return False


def encode_headers(headers) -> bytes:
    """Headers as a record encodes them after their count."""
    out = bytearray()
    _put_headers(out, headers)
    return bytes(out)


def encode_fields(key: bytes | None, value: bytes | None, headers) -> bytes:
    """A record's key, value and headers as a v2 batch encodes them."""
    out = bytearray()
    _put_fields(out, key, value, headers)
    return bytes(out)


def _put_fields(out: bytearray, key: bytes | None, value: bytes | None, headers) -> None:
    for field in (key, value):
        if field is None:
            _put_varint(out, -1)
        else:
            _put_varint(out, len(field))
            out += field
    _put_varint(out, len(headers))
    _put_headers(out, headers)


def _put_headers(out: bytearray, headers) -> None:
    for name, header_value in headers:
        raw = name.encode()
        _put_varint(out, len(raw))
        out += raw
        if header_value is None:
            _put_varint(out, -1)
        else:
            _put_varint(out, len(header_value))
            out += header_value


def encode(items: list[Record], codec: str = "none") -> bytes:
    """A new batch holding `items` as CreateTime records; `stamp` gives it its writer
    fields and CRC. Offsets are relative to the first record: the target assigns its own.
    """
    base_ts = min(r.timestamp for r in items)
    max_ts = max(r.timestamp for r in items)
    body = bytearray()
    record = bytearray()
    for delta, r in enumerate(items):
        record.clear()
        record.append(0)
        _put_varint(record, r.timestamp - base_ts)
        _put_varint(record, delta)
        _put_fields(record, r.key, r.value, r.headers)
        _put_varint(body, len(record))
        body += record
    compression = CODECS[codec]
    if compression:
        body = COMPRESS[compression](bytes(body))
    header = HEADER.pack(0, HEADER_SIZE - 12 + len(body), -1, 2, 0, compression,
                         len(items) - 1, base_ts, max_ts, NO_PRODUCER, -1, -1, len(items))
    return header + bytes(body)


@dataclass(slots=True)
class Merged:
    """Records of several batches in one new batch, as `encode` leaves it for `stamp`."""

    data: bytes
    count: int
    max_timestamp: int
    runs: tuple[tuple[int, int], ...]  # (first source offset, count) of each contiguous run


def merge(batch_list: list[Batch], position: int, codec: str, limit: int,
          rewrite: Callable[[bytes], bytes | None] | None = None) -> list[Merged]:
    """The v2 batches' records from `position` on, in new batches of about `limit` bytes.

    Each record's key, value and headers are copied as bytes: only its length, timestamp
    delta and offset delta are written again. A merge of small batches thus costs a walk
    of varints per record, not a decode and an encode. `rewrite`, given, turns each record's
    key, value and headers as encoded into the ones to write, or None to leave it out.
    """
    merged: list[Merged] = []
    body = bytearray()
    count = base_ts = max_ts = 0
    runs: list[list[int]] = []
    small = _SMALL_VARINTS

    def close():
        nonlocal body, count, runs
        if count:
            merged.append(_merged(body, count, base_ts, max_ts, runs, codec))
        body, count, runs = bytearray(), 0, []

    for batch in batch_list:
        records_body = batch.data[HEADER_SIZE:]
        compression = batch.attributes & COMPRESSION_MASK
        if compression:
            records_body = memoryview(DECOMPRESS[compression](records_body.tobytes()))
        fixed_ts = batch.max_timestamp if batch.attributes & LOG_APPEND_TIME else None
        at = 0
        for _ in range(batch.record_count):
            byte = records_body[at]
            if byte < 0x80 or records_body[at + 1] >= 0x80:
                length, at = _varint(records_body, at)
            else:  # most records are 64 bytes to 8 KiB: a length of two bytes
                length = ((byte & 0x7F) | records_body[at + 1] << 7) >> 1
                at += 2
            end = at + length
            byte = records_body[at + 1]  # after the record's attributes
            if byte < 0x80:
                ts_delta, fields = (byte >> 1) ^ -(byte & 1), at + 2
            elif records_body[at + 2] < 0x80:  # within 8 s of the batch's first record: two bytes
                value = (byte & 0x7F) | records_body[at + 2] << 7
                ts_delta, fields = (value >> 1) ^ -(value & 1), at + 3
            else:
                ts_delta, fields = _varint(records_body, at + 1)
            byte = records_body[fields]
            if byte < 0x80:  # an offset delta below 64: one byte
                offset_delta, fields = (byte >> 1) ^ -(byte & 1), fields + 1
            elif records_body[fields + 1] < 0x80:  # below 8,192: two bytes
                value = (byte & 0x7F) | records_body[fields + 1] << 7
                offset_delta, fields = (value >> 1) ^ -(value & 1), fields + 2
            else:
                offset_delta, fields = _varint(records_body, fields)
            offset = batch.base_offset + offset_delta
            if offset >= position:
                written = records_body[fields:end] if rewrite is None else rewrite(bytes(records_body[fields:end]))
                if written is None:
                    at = end
                    continue
                timestamp = batch.base_timestamp + ts_delta if fixed_ts is None else fixed_ts
                if count and len(body) + len(written) + _MOST_RECORD_HEAD > limit:
                    close()
                if not count:
                    base_ts = max_ts = timestamp
                elif timestamp > max_ts:
                    max_ts = timestamp
                delta = timestamp - base_ts
                head = b"\0" + (small[delta] if 0 <= delta < SMALL else varint_bytes(delta)) \
                    + (small[count] if count < SMALL else varint_bytes(count))
                size = len(head) + len(written)
                body += small[size] if size < SMALL else varint_bytes(size)
                body += head
                body += written
                if runs and runs[-1][0] + runs[-1][1] == offset:
                    runs[-1][1] += 1
                else:
                    runs.append([offset, 1])
                count += 1
            at = end
    close()
    return merged


def _merged(body: bytearray, count: int, base_ts: int, max_ts: int, runs: list[list[int]],
            codec: str) -> Merged:
    compression = CODECS[codec]
    records_body = COMPRESS[compression](bytes(body)) if compression else bytes(body)
    header = HEADER.pack(0, HEADER_SIZE - 12 + len(records_body), -1, 2, 0, compression,
                         count - 1, base_ts, max_ts, NO_PRODUCER, -1, -1, count)
    return Merged(header + records_body, count, max_ts, tuple((first, n) for first, n in runs))


def readable(fetched: list[Batch], aborted: list[tuple[int, int]]) -> Iterator[tuple[Batch, bool]]:
    """Each batch with whether a read_committed consumer would read it.

    Control batches (transaction markers) and batches of aborted transactions are not
    read. `aborted` is the fetch response's (producer id, first offset) list; the walk
    is Kafka's consumer's: a producer's transaction is aborted from its first offset
    up to its abort marker.
    """
    pending = sorted(aborted, key=lambda entry: entry[1])
    aborting: set[int] = set()
    for batch in fetched:
        if batch.is_transactional:
            while pending and pending[0][1] <= batch.last_offset:
                aborting.add(pending.pop(0)[0])
            if batch.is_control:
                if _is_abort_marker(batch):
                    aborting.discard(batch.producer_id)
                yield batch, False
                continue
            if batch.producer_id in aborting:
                yield batch, False
                continue
        yield batch, not batch.is_control


def _is_abort_marker(batch: Batch) -> bool:
    """A control record's key is (version int16, type int16): type 0 is ABORT."""
    body = batch.data[HEADER_SIZE:]
    length, at = _varint(body, 0)
    at += 1
    _, at = _varint(body, at)
    _, at = _varint(body, at)
    key, _ = _bytes(body, at)
    return key is not None and len(key) >= 4 and struct.unpack_from(">h", key, 2)[0] == 0
