"""How each fetched batch reaches the target: copied as bytes, merged, re-encoded or dropped.

Plain Python over `replicator.batches`: given a partition's fetched batches, it
returns Steps, each a contiguous range of source offsets and the shipments that
carry it (none when nothing of it is written: transaction markers, aborted
records, our own copies coming back).

- batch mode copies a batch as bytes unless something stops it (`Batch.obstacle`,
  a key-hashed target, a batch over the request limit), then re-encodes only it;
- runs of small batches are merged into full ones: copying costs per batch,
  merging per record, so below `merge_below` bytes a merge is cheaper; so is a batch
  under an eighth of the batch size when its partition brought a full batch's worth
  (a produce request carries one batch per partition: a few partitions copying 16 KiB
  batches would send requests of a few tens of KiB); both modes merge v2 batches as
  bytes (`batches.merge`);
- record mode writes every record anew with provenance headers, which it appends to the
  record's bytes (`Provenance.forward_fields`); it decodes only a record that already
  carries them, and the records of a key-hashed target or of old (v0/v1) batches;
- whatever is re-encoded is merged with its neighbours up to the batch size.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Callable

from kafka.structs import TopicPartition

from . import batches, wire
from .batches import Batch, Record
from .producer import Delivery, Shipment
from .provenance import Provenance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where one source partition's records go."""

    topic: str
    partitions: int
    partition: int | None  # the same number as the source, or None: hashed by key


@dataclass
class Step:
    """A contiguous range of source offsets [first, next) and what writes it."""

    first: int
    next: int
    shipments: list[Shipment] = field(default_factory=list)
    how: str = "skip"  # copy, merge, encode, skip
    records: int = 0
    bytes: int = 0
    loop_skipped: int = 0

    @property
    def delivery(self) -> Delivery | None:
        return self.shipments[0].delivery if self.shipments else None


class Shipper:
    def __init__(self, mode: str, codec: str, batch_bytes: int, max_batch_bytes: int,
                 merge_below: int, is_ours: Callable[[int], bool], provenance: Provenance,
                 on_fallback: Callable[[object, str], None]):
        self.mode = mode
        self._codec = codec
        self._batch_bytes = min(batch_bytes, max_batch_bytes)
        self._max_batch_bytes = max_batch_bytes
        self._merge_below = merge_below
        self._is_ours = is_ours
        self._provenance = provenance
        self._on_fallback = on_fallback
        self._round_robin = itertools.count()

    def plan(self, tp, target: Target, position: int, fetched: list[Batch],
             aborted: list[tuple[int, int]], singles_until: int = -1) -> list[Step]:
        steps: list[Step] = []
        run: list[Batch] = []  # consecutive batches to re-encode together
        run_bytes = 0
        merge_below = self._merge_below
        if sum(batch.size for batch in fetched) >= self._batch_bytes:
            merge_below = max(merge_below, self._batch_bytes // 8)

        def close_run():
            nonlocal run, run_bytes
            if run:
                steps.append(self._encode(tp, target, run, position))
                run, run_bytes = [], 0

        for batch, committed in batches.readable(fetched, aborted):
            if batch.next_offset <= position:
                continue
            if not committed or self._is_ours(batch.producer_id):
                close_run()
                step = Step(max(batch.base_offset, position), batch.next_offset)
                if committed:
                    step.loop_skipped = batch.record_count
                steps.append(step)
                continue
            if batch.base_offset < singles_until:
                close_run()
                steps.extend(self._singles(tp, target, batch, position))
                continue
            reason = self._obstacle(batch, target, position)
            if reason is None and batch.size >= merge_below:
                close_run()
                steps.append(self._copy(tp, target, batch))
                continue
            if reason is not None and reason != "record mode":
                self._on_fallback(tp, reason)
            if run_bytes + batch.size > self._batch_bytes:
                close_run()
            run.append(batch)
            run_bytes += batch.size
        close_run()
        return steps

    def _obstacle(self, batch: Batch, target: Target, position: int) -> str | None:
        if self.mode == "record":
            return "record mode"
        reason = batch.obstacle(position)
        if reason is not None:
            return reason
        if target.partition is None:
            return "records are hashed to target partitions by key (partitioning: hash or a narrower target)"
        if batch.size > self._max_batch_bytes:
            return f"the batch ({batch.size} bytes) is larger than producer.maxRequestSize"
        return None

    def _copy(self, tp, target: Target, batch: Batch) -> Step:
        delivery = Delivery(1, batch.max_timestamp, tp.topic)
        shipment = Shipment(TopicPartition(target.topic, target.partition), batch.record_count, delivery,
                            copy=batch, origin=tp, runs=((batch.base_offset, batch.record_count),))
        return Step(batch.base_offset, batch.next_offset, [shipment], "copy",
                    batch.record_count, batch.size)

    def _records(self, batch_list: list[Batch], position: int) -> tuple[list[Record], int]:
        """The records to write from these batches, and how many came back from us."""
        kept: list[Record] = []
        looped = 0
        forward = self._provenance.forward if self.mode == "record" else None
        for batch in batch_list:
            for record in batches.records(batch):
                if record.offset < position:
                    continue
                if forward is not None:
                    headers = forward(record.headers)
                    if headers is None:
                        looped += 1
                        continue
                    record.headers = headers
                kept.append(record)
        return kept, looped

    def _encode(self, tp, target: Target, batch_list: list[Batch], position: int) -> Step:
        """Re-encode the records of consecutive batches: "merge" for several, else "encode"."""
        first = max(batch_list[0].base_offset, position)
        step = Step(first, batch_list[-1].next_offset, how="merge" if len(batch_list) > 1 else "encode")
        if target.partition is not None and all(b.magic == 2 for b in batch_list):
            return self._merge(tp, target, batch_list, position, step)
        kept, step.loop_skipped = self._records(batch_list, position)
        if not kept:
            return step
        chunks = self._chunks(kept, target)
        delivery = Delivery(len(chunks), max(r.timestamp for r in kept), tp.topic)
        for partition, chunk in chunks:
            data = batches.encode(chunk, self._codec)
            step.shipments.append(Shipment(TopicPartition(target.topic, partition), len(chunk), delivery,
                                           data=data, **_origin(tp, target, chunk)))
            step.bytes += len(data)
        step.records = len(kept)
        return step

    def _merge(self, tp, target: Target, batch_list: list[Batch], position: int, step: Step) -> Step:
        """`_encode` without decoding, for a target of the same partition: batch mode adds
        no headers, record mode appends them to each record's bytes."""
        rewrite = None
        if self.mode == "record":
            forward = self._provenance.forward_fields

            def rewrite(fields: bytes) -> bytes | None:
                forwarded = forward(fields)
                if forwarded is None:
                    step.loop_skipped += 1
                return forwarded
        merged = batches.merge(batch_list, position, self._codec, self._batch_bytes, rewrite)
        if not merged:
            return step
        delivery = Delivery(len(merged), max(m.max_timestamp for m in merged), tp.topic)
        destination = TopicPartition(target.topic, target.partition)
        for m in merged:
            step.shipments.append(Shipment(destination, m.count, delivery, data=m.data, origin=tp, runs=m.runs))
            step.records += m.count
            step.bytes += len(m.data)
        return step

    def _singles(self, tp, target: Target, batch: Batch, position: int) -> list[Step]:
        """One step per record, so that the one the target refuses is known exactly."""
        kept, looped = self._records([batch], position)
        steps = []
        start = max(batch.base_offset, position)
        for record in kept:
            partition = target.partition if target.partition is not None else self._partition(record, target)
            data = batches.encode([record], self._codec)
            delivery = Delivery(1, record.timestamp, tp.topic)
            shipment = Shipment(TopicPartition(target.topic, partition), 1, delivery, data=data,
                                **_origin(tp, target, [record]))
            step = Step(start, record.offset + 1, [shipment], "encode", 1, len(data))
            steps.append(step)
            start = record.offset + 1
        if start < batch.next_offset or not steps:
            steps.append(Step(start, batch.next_offset, loop_skipped=looped))
        return steps

    def _chunks(self, records: list[Record], target: Target) -> list[tuple[int, list[Record]]]:
        """Records grouped by target partition, in order, cut at the batch size."""
        groups: dict[int, list[Record]] = {}
        if target.partition is not None:
            groups[target.partition] = records
        else:
            for record in records:
                groups.setdefault(self._partition(record, target), []).append(record)
        chunks = []
        for partition, group in groups.items():
            chunk: list[Record] = []
            size = 0
            for record in group:
                record_size = 24 + len(record.key or b"") + len(record.value or b"")
                if chunk and size + record_size > self._batch_bytes:
                    chunks.append((partition, chunk))
                    chunk, size = [], 0
                chunk.append(record)
                size += record_size
            chunks.append((partition, chunk))
        return chunks

    def _partition(self, record: Record, target: Target) -> int:
        if record.key is None:
            return next(self._round_robin) % target.partitions
        return wire.key_hash(record.key) % target.partitions


def _origin(tp, target: Target, records: list[Record]) -> dict:
    """The source offsets a shipment carries, as runs, for the offset map.

    Records hashed over the target's partitions have no single target offset to map to.
    """
    if target.partition is None:
        return {}
    runs: list[list[int]] = []
    for record in records:
        if runs and runs[-1][0] + runs[-1][1] == record.offset:
            runs[-1][1] += 1
        else:
            runs.append([record.offset, 1])
    return {"origin": tp, "runs": tuple((first, count) for first, count in runs)}
