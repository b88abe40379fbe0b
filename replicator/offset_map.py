"""The offset map: where each copied source record landed on the target.

Every write the target acknowledges gives Spans: source offsets [source, source + count)
sit at target offsets [target, target + count). A span that continues the previous one
on both sides extends it, so a partition copied without interruption is one entry.

A group's committed source offset translates to the target offset of the first record
copied from that offset on; after a replay (a crash copied some records again) the
latest copy counts, so a consumer that moves to the target never sees again what it
had processed. A translation is exact or refused with the reason, never approximate.

This module is plain Python: the flow's Journal collects spans and turns them into map
records (one per span, keyed by where the span starts, so a compacted topic keeps
the longest version of each); `replicator.translation` reads them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import NamedTuple


class Partition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True)
class Span:
    source: int
    target: int
    count: int

    @property
    def source_end(self) -> int:
        return self.source + self.count

    @property
    def target_end(self) -> int:
        return self.target + self.count

    def continued_by(self, source: int, target: int) -> bool:
        return source == self.source_end and target == self.target_end


@dataclass(frozen=True)
class Translation:
    """Where a consumer that committed `committed` on the source resumes on the target:
    `target`, or None with the `reason` it cannot be said."""

    committed: int
    target: int | None
    reason: str | None = None


@dataclass
class PartitionMap:
    """The spans of one source partition on one target partition."""

    spans: list[Span] = field(default_factory=list)

    def translate(self, committed: int, replicated_to: int) -> Translation:
        """Where a consumer that committed `committed` on the source resumes on the target.

        `replicated_to` is the replicator's own committed position: every source offset
        below it was copied, or passed over on purpose (aborted, control, compacted away,
        our own copies coming back).
        1. An offset inside spans: the latest copy of that record.
        2. An offset in a gap before a span: the latest copy of the first record after it.
        3. An offset past every span but not past `replicated_to`: after the latest copy
           of the last record (nothing between them was to be copied).
        4. Anything else was not copied yet, or precedes the map.
        """
        spans = self.spans
        if not spans or committed < min(span.source for span in spans):
            return Translation(committed, None, "committed before replication started "
                                                "(the offset map holds nothing that early)")
        if committed > replicated_to:
            return Translation(committed, None, f"not copied yet (the replicator has copied "
                                                f"up to offset {replicated_to})")
        holding = [span for span in spans if span.source <= committed < span.source_end]
        if holding:
            return _at(committed, holding, committed - _latest(holding).source)
        later = [span for span in spans if span.source > committed]
        if later:
            first = min(span.source for span in later)
            return _at(committed, [span for span in later if span.source == first], 0)
        end = max(span.source_end for span in spans)
        ending = [span for span in spans if span.source_end == end]
        return _at(committed, ending, _latest(ending).count)

    def trimmed(self, log_start: int) -> PartitionMap:
        """The spans that still cover records of the source log (from `log_start` on)."""
        return PartitionMap([span for span in self.spans if span.source_end > log_start])


def _latest(spans: list[Span]) -> Span:
    return max(spans, key=lambda span: span.target)


def _at(committed: int, copies: list[Span], delta: int) -> Translation:
    """`delta` records into the latest of `copies`; a copy of unknown place (-1) may be the
    latest, so it leaves the answer unknown."""
    latest = _latest(copies)
    if any(span.target < 0 for span in copies):
        return Translation(committed, None, "the target did not say where it wrote that record "
                                            "(an answer to a retried write)")
    return Translation(committed, latest.target + delta)


class Key(NamedTuple):
    """Identifies one span in the map topic: the same key is rewritten as the span grows."""

    source_cluster: str
    source: Partition
    target: Partition
    source_offset: int
    target_offset: int


@dataclass(frozen=True)
class Entry:
    key: Key
    count: int

    @property
    def span(self) -> Span:
        return Span(self.key.source_offset, self.key.target_offset, self.count)

    def encode(self) -> tuple[bytes, bytes]:
        k = self.key
        key = [k.source_cluster, k.source.topic, k.source.partition, k.source_offset,
               k.target.topic, k.target.partition, k.target_offset]
        return (json.dumps(key, separators=(",", ":")).encode(),
                json.dumps({"count": self.count}, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, key: bytes, value: bytes | None) -> Entry | None:
        """The entry a map record holds; None for a record that is not one (or a tombstone)."""
        try:
            cluster, topic, partition, source, target_topic, target_partition, target = json.loads(key)
            count = json.loads(value)["count"] if value is not None else 0
        except (TypeError, ValueError, KeyError):
            return None
        return cls(Key(cluster, Partition(topic, partition), Partition(target_topic, target_partition),
                       source, target), count)


class Journal:
    """A flow's spans not yet written to the map topic, and the last span of each partition."""

    def __init__(self, source_cluster: str):
        self._source_cluster = source_cluster
        self._last: dict[tuple[Partition, Partition], Entry] = {}
        self._unwritten: dict[Key, Entry] = {}

    def record(self, source: Partition, target: Partition, source_offset: int,
               target_offset: int, count: int) -> None:
        """Source records [source_offset, +count) were written at target_offset on."""
        last = self._last.get((source, target))
        if last is not None and last.span.continued_by(source_offset, target_offset):
            entry = Entry(last.key, last.count + count)
        else:
            entry = Entry(Key(self._source_cluster, source, target, source_offset, target_offset), count)
        self._last[(source, target)] = entry
        self._unwritten[entry.key] = entry

    def take(self, partitions=None) -> list[Entry]:
        """The entries to write now (each span at its latest length), of every source
        partition or of `partitions`; the journal forgets them."""
        if partitions is None:
            entries = list(self._unwritten.values())
            self._unwritten.clear()
            return entries
        wanted = {Partition(tp.topic, tp.partition) for tp in partitions}
        entries = [entry for key, entry in self._unwritten.items() if key.source in wanted]
        for entry in entries:
            del self._unwritten[entry.key]
        return entries

    def forget(self, partitions) -> None:
        """Stop extending the spans of partitions this member no longer owns."""
        gone = {Partition(tp.topic, tp.partition) for tp in partitions}
        for pair in [pair for pair in self._last if pair[0] in gone]:
            del self._last[pair]


POSITION = "position"


@dataclass(frozen=True)
class Position:
    """Exactly-once: the next offset to copy of a source partition, committed on the target
    in the same transaction as the copies before it. Keyed by the replicator's group, so
    the compacted topic keeps the latest of each."""

    group: str
    source_cluster: str
    source: Partition
    offset: int

    def encode(self) -> tuple[bytes, bytes]:
        key = [POSITION, self.group, self.source_cluster, self.source.topic, self.source.partition]
        return (json.dumps(key, separators=(",", ":")).encode(),
                json.dumps({"next": self.offset}, separators=(",", ":")).encode())

    @classmethod
    def decode(cls, key: bytes, value: bytes | None) -> Position | None:
        """The position a map record holds; None for a record that is not one (or a tombstone)."""
        try:
            kind, group, cluster, topic, partition = json.loads(key)
            offset = json.loads(value)["next"]
        except (TypeError, ValueError, KeyError):
            return None
        if kind != POSITION:
            return None
        return cls(group, cluster, Partition(topic, partition), offset)
