"""Record batches for unit tests, built with replicator.batches and edited in place."""

from __future__ import annotations

import struct

from replicator import batches
from replicator.batches import Record


def rec(offset: int, key=b"k", value=b"v", headers=None, timestamp: int = 1_000) -> Record:
    return Record(offset, timestamp, key, value, headers or [])


def make(records: list[Record], base_offset: int = 0, attributes: int = 0, producer_id: int = -1,
         producer_epoch: int = -1, base_sequence: int = -1, codec: str = "none",
         last_offset_delta: int | None = None) -> batches.Batch:
    """One batch holding `records`, with the header fields a source broker would have set."""
    data = bytearray(batches.encode(records, codec))
    struct.pack_into(">q", data, 0, base_offset)
    struct.pack_into(">h", data, 21, batches.CODECS[codec] | attributes)
    if last_offset_delta is not None:
        struct.pack_into(">i", data, 23, last_offset_delta)
    struct.pack_into(">qhi", data, 43, producer_id, producer_epoch, base_sequence)
    struct.pack_into(">I", data, 17, batches.crc32c(bytes(data[21:])))
    [batch] = batches.split(bytes(data))
    return batch
