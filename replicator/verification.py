"""`verify`: each source partition compared with its copy, record by record, through the offset map.

The map's spans say where each copied source record landed, so the copy is walked in target
offset order beside the source records the spans name: two ordered streams in step, one
fetch of each in memory. Per partition it tells

- altered: a copy whose key, value, headers (the replicator's provenance headers aside) or
  timestamp differ from its source record's;
- missing: a source record below the replicator's committed offset that no span covers (and
  that was not left out on purpose: records written by a replicator, which go no further),
  or whose copy the target does not hold;
- extra: a target record no span maps, written by someone else than a replicator, or mapped
  to a source offset that never held a record.

What the source no longer has (retention, compaction) is no mismatch: such a copy counts as
gone at the source. Records of aborted transactions and markers are read on neither side.
Copies the map does not name yet (written since it was read, or left by a crash before their
spans were written) are counted, not compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from kafka import KafkaConsumer, TopicPartition

from . import link, registry, wire
from .batches import decode_fields, encode_headers, headers_at
from .config import ReplicatorConfig
from .errors import ProblemFound
from .offset_map import Partition, PartitionMap, Span
from .partition_log import FETCH_BYTES, Chunk, LogRecord, PartitionLog
from .provenance import first_hop, origin_of, user_headers
from .selection import Selection
from .tables import dash, table
from .topics import topic_configs
from .translation import Translator

LISTED = 20  # discrepancies listed per partition; the others are counted
CONNECT_TIMEOUT_MS = 15_000


@dataclass
class Discrepancy:
    """A run of consecutive records with the same fault; an offset is None on the side that
    has no such record."""

    kind: str  # missing, extra or altered
    source_offset: int | None
    target_offset: int | None
    count: int
    what: str

    def continued_by(self, kind: str, source: int | None, target: int | None, what: str) -> bool:
        return (kind == self.kind and what == self.what
                and _after(self.source_offset, self.count) == source
                and _after(self.target_offset, self.count) == target)


def _after(offset: int | None, count: int) -> int | None:
    return None if offset is None else offset + count


@dataclass
class PartitionVerdict:
    direction: str
    topic: str
    partition: int
    target_topic: str
    copied_to: int | None  # the replicator's committed source offset
    compared: int = 0
    missing: int = 0
    extra: int = 0
    altered: int = 0
    gone_at_source: int = 0  # copies whose source record was deleted or compacted away since
    gone_at_target: int = 0  # copies compacted away on a compacted target topic
    copied_twice: int = 0  # records the map places more than once (replays after a crash)
    sent_back: int = 0  # source records written by a replicator: not copied back on purpose
    unmapped_copies: int = 0  # written by a replicator, not in the map (yet)
    written_on_target: int = 0  # local writes to a topic the other direction copies back
    unverified: str | None = None  # why this partition could not be verified
    note: str | None = None
    discrepancies: list[Discrepancy] = field(default_factory=list)
    unlisted: int = 0  # discrepancies past the LISTED ones

    @property
    def mismatches(self) -> int:
        return self.missing + self.extra + self.altered

    def report(self, kind: str, source: int | None, target: int | None, what: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        listed = self.discrepancies
        if listed and listed[-1].continued_by(kind, source, target, what):
            listed[-1].count += 1
        elif len(listed) < LISTED:
            listed.append(Discrepancy(kind, source, target, 1, what))
        else:
            self.unlisted += 1

    def as_json(self) -> dict:
        return {**asdict(self), "mismatches": self.mismatches}


@dataclass(frozen=True)
class Sides:
    """One partition's two logs and what bounds them."""

    source: PartitionLog
    target: PartitionLog
    source_start: int
    target_start: int
    target_end: int
    source_compacted: bool
    target_compacted: bool
    added_headers: list = field(default_factory=list)  # record mode: what a first copy gains


@dataclass(frozen=True)
class _Added:
    """Headers appended to each copy, as encoded: a copy that is its source record with them
    appended matches without a decode of either."""

    encoded: bytes
    count: int

    def to(self, source: bytes, copy: bytes) -> bool:
        if not self.count or not copy.endswith(self.encoded):
            return False
        fields_end, count, first = headers_at(source)
        copy_fields_end, copy_count, copy_first = headers_at(copy)
        return (fields_end == copy_fields_end and copy_count == count + self.count
                and source[:fields_end] == copy[:fields_end]
                and source[first:] == copy[copy_first:len(copy) - len(self.encoded)])


@dataclass(frozen=True)
class Writers:
    """Who wrote a record: told from its batch's producer id, and in record mode its headers."""

    is_copy: Callable[[int], bool]  # a replicator's producer id on the target
    sent_back: Callable[[int], bool]  # a replicator's producer id on the source: not copied from there
    came_from_target: Callable[[bytes], bool]  # record mode: the target is the record's origin
    local_writes: bool  # the other direction copies the target topic: others write there too


def check_partition(verdict: PartitionVerdict, spans: list[Span], sides: Sides, writers: Writers) -> None:
    """Walk the copy in target order beside the source records the spans name; then read the
    source offsets no span covers, up to the replicator's committed offset."""
    placed = sorted((span for span in spans if span.target >= 0), key=lambda span: span.target)
    verdict.copied_twice = sum(span.count for span in placed) - _covered(placed)
    if placed:
        at = max(sides.target_start, placed[0].target)
        for span in placed:
            if span.target_end <= at:
                continue  # below the target's log start
            if span.target > at:
                _unmapped(verdict, sides.target.chunks(at, span.target), writers)
            skip = max(0, at - span.target)
            _pair(verdict, Span(span.source + skip, span.target + skip, span.count - skip), sides)
            at = span.target_end
        _unmapped(verdict, sides.target.chunks(at, sides.target_end), writers)
    if verdict.copied_to is None or not spans:
        return
    first = max(sides.source_start, min(span.source for span in spans))
    for start, end in _gaps(spans, first, verdict.copied_to):
        for chunk in sides.source.chunks(start, end):
            if writers.sent_back(chunk.producer_id):
                verdict.sent_back += chunk.count
                continue
            for record in chunk.records():
                if writers.came_from_target(record[2]):
                    verdict.sent_back += 1
                else:
                    verdict.report("missing", record[0], None, "not copied")


def _pair(verdict: PartitionVerdict, span: Span, sides: Sides) -> None:
    """Compare the source records [span.source, +count) with their copies, in step: a batch
    copied as bytes at once, any other record by record."""
    delta = span.target - span.source
    added = _Added(encode_headers(sides.added_headers), len(sides.added_headers))
    source = _Cursor(sides.source.chunks(span.source, span.source_end))
    target = _Cursor(sides.target.chunks(span.target, min(span.target_end, max(span.target, sides.target_end))))
    while True:
        whole, copy = source.whole_chunk(), target.whole_chunk()
        if whole and copy and whole.first + delta == copy.first and whole.same_records_as(copy):
            verdict.compared += whole.count
            source.next_chunk()
            target.next_chunk()
            continue
        a, b = source.peek(), target.peek()
        if a is None and b is None:
            return
        if b is None or (a is not None and a[0] + delta < b[0]):
            if sides.target_compacted:
                verdict.gone_at_target += 1
            else:
                verdict.report("missing", a[0], a[0] + delta, "not on the target")
            source.advance()
        elif a is None or b[0] < a[0] + delta:
            source_offset = b[0] - delta
            if source_offset < max(sides.source_start, sides.source.log_start) or sides.source_compacted:
                verdict.gone_at_source += 1
            else:
                verdict.report("extra", source_offset, b[0], "its source offset holds no record")
            target.advance()
        else:
            verdict.compared += 1
            if a[1] != b[1] or (a[2] != b[2] and not added.to(a[2], b[2])):
                differing = _differences(a, b)
                if differing:
                    verdict.report("altered", a[0], b[0], differing)
            source.advance()
            target.advance()


class _Cursor:
    """A position in a stream of chunks: at a chunk's start, or at one of its records."""

    def __init__(self, chunks: Iterator[Chunk]):
        self._chunks = chunks
        self._chunk = next(chunks, None)
        self._records: list[LogRecord] | None = None
        self._index = 0

    def whole_chunk(self) -> Chunk | None:
        """The chunk the cursor is at the start of, if it is a whole batch."""
        chunk = self._chunk
        return chunk if chunk is not None and self._records is None and chunk.whole else None

    def next_chunk(self) -> None:
        self._chunk = next(self._chunks, None)
        self._records, self._index = None, 0

    def peek(self) -> LogRecord | None:
        while self._chunk is not None:
            if self._records is None:
                self._records = self._chunk.records()
            if self._index < len(self._records):
                return self._records[self._index]
            self.next_chunk()
        return None

    def advance(self) -> None:
        self._index += 1


def _differences(source: LogRecord, copy: LogRecord) -> str | None:
    """What differs between a record and its copy, or None (only provenance headers do)."""
    key, value, headers = decode_fields(source[2])
    copy_key, copy_value, copy_headers = decode_fields(copy[2])
    names = [name for name, ours, theirs in (("key", key, copy_key), ("value", value, copy_value),
                                             ("headers", user_headers(headers), user_headers(copy_headers)),
                                             ("timestamp", source[1], copy[1])) if ours != theirs]
    return f"{', '.join(names)} differ{'s' if len(names) == 1 else ''}" if names else None


def _unmapped(verdict: PartitionVerdict, chunks: Iterator[Chunk], writers: Writers) -> None:
    for chunk in chunks:
        if writers.is_copy(chunk.producer_id):
            verdict.unmapped_copies += chunk.count
        elif writers.local_writes:
            verdict.written_on_target += chunk.count
        else:
            for record in chunk.records():
                verdict.report("extra", None, record[0], "no source record maps there")


def _covered(spans: list[Span]) -> int:
    """Source offsets the spans cover, each once."""
    total, reach = 0, None
    for span in sorted(spans, key=lambda span: span.source):
        start = span.source if reach is None else max(span.source, reach)
        if span.source_end > start:
            total += span.source_end - start
            reach = span.source_end
    return total


def _gaps(spans: list[Span], first: int, end: int) -> list[tuple[int, int]]:
    """The source offset ranges in [first, end) that no span covers."""
    gaps, at = [], first
    for span in sorted(spans, key=lambda span: span.source):
        if span.source > at:
            gaps.append((at, min(span.source, end)))
        at = max(at, span.source_end)
        if at >= end:
            break
    if at < end:
        gaps.append((at, end))
    return [(start, stop) for start, stop in gaps if start < stop]


class Verifier:
    """Verifies one direction's copies; holds clients of both clusters until closed."""

    def __init__(self, config: ReplicatorConfig, direction: str, topics: list[str] | None = None,
                 fetch_bytes: int = FETCH_BYTES):
        self.direction = direction
        self._config = config
        self._settings = config.direction(direction)
        self._topics = set(topics) if topics else None
        self._fetch_bytes = fetch_bytes
        (self._source_side, self._source), (self._target_side, self._target) = config.clusters(direction)
        self._opened: list = []
        try:
            self._translator = Translator(config, direction)
            self._opened.append(self._translator)
            self._target_admin = link.admin_client(self._target_side, self._target)
            self._opened.append(self._target_admin)
            self._target_id = link.cluster_id(self._target_admin, self._target_side, self._target)
            source_id = link.cluster_id(self._translator.source_admin, self._source_side, self._source)
            self._added_headers = first_hop(source_id) if self._settings.mode == "record" else []
            self._sides = {}
            for side, cluster, admin in ((self._source_side, self._source, self._translator.source_admin),
                                         (self._target_side, self._target, self._target_admin)):
                self._sides[side] = self._open(side, cluster, admin)
        except BaseException:
            self.close()
            raise

    def _open(self, side: str, cluster, admin) -> dict:
        settings = link.client_settings(cluster)
        with link.reaching(side, cluster):
            consumer = KafkaConsumer(**settings, enable_auto_commit=False, isolation_level="read_committed")
            self._opened.append(consumer)
            link_ = wire.Wire(settings, 2 * self._fetch_bytes + 65536)
            self._opened.append(link_)
            link_.bootstrap(CONNECT_TIMEOUT_MS)
            writers = registry.Registry(settings)
            self._opened.append(writers)
            has_registry = registry.TOPIC in set(admin.list_topics())
            if has_registry:
                writers.load()
        is_ours = writers.is_ours if has_registry else (lambda producer_id: False)
        return {"consumer": consumer, "wire": link_, "is_ours": is_ours, "admin": admin}

    def close(self) -> None:
        for closable in reversed(self._opened):
            closable.close()
        self._opened.clear()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def verify(self) -> list[PartitionVerdict]:
        """One pass over every partition of the direction's topics (or of those chosen)."""
        source, target = self._sides[self._source_side], self._sides[self._target_side]
        selection = Selection.of(self._settings)
        with link.reaching(self._source_side, self._source):
            existing = source["consumer"].topics()
            routes = {s: t for s, t in selection.routes(existing).items()
                      if s in existing and (self._topics is None or s in self._topics)}
        if self._topics:
            unknown = self._topics - set(routes)
            if unknown:
                raise ProblemFound(f"{self.direction} copies no topic named {', '.join(sorted(unknown))} "
                                   f"(it copies {', '.join(sorted(selection.routes(existing))) or 'none'})")
        committed = self._translator.committed(self._config.group(self.direction).group_id)
        maps = self._translator.maps() if routes else {}
        source["wire"].track(list(routes))
        target["wire"].track(set(routes.values()))
        verdicts = []
        for topic, target_topic in sorted(routes.items()):
            verdicts.extend(self._verify_topic(topic, target_topic, committed, maps))
        return verdicts

    def _verify_topic(self, topic: str, target_topic: str, committed: dict, maps: dict) -> list[PartitionVerdict]:
        source, target = self._sides[self._source_side], self._sides[self._target_side]
        with link.reaching(self._source_side, self._source):
            partitions = sorted(source["consumer"].partitions_for_topic(topic) or ())
            source_tps = [TopicPartition(topic, p) for p in partitions]
            source_starts = source["consumer"].beginning_offsets(source_tps)
            source_compacted = "compact" in topic_configs(source["admin"], topic).get("cleanup.policy", "")
        with link.reaching(self._target_side, self._target):
            target_partitions = target["consumer"].partitions_for_topic(target_topic) or set()
            target_tps = [TopicPartition(target_topic, p) for p in partitions if p in target_partitions]
            target_starts = target["consumer"].beginning_offsets(target_tps) if target_tps else {}
            target_ends = target["consumer"].end_offsets(target_tps) if target_tps else {}
            target_compacted = target_partitions and "compact" in topic_configs(
                target["admin"], target_topic).get("cleanup.policy", "")
        hashed = self._settings.partitioning == "hash" or len(target_partitions) < len(partitions)
        reverse = "targetToSource" if self.direction == "sourceToTarget" else "sourceToTarget"
        local_writes = (self._config.direction(reverse).enabled
                        and Selection.of(self._config.direction(reverse)).target(target_topic) is not None)
        writers = Writers(target["is_ours"], source["is_ours"], self._came_from_target(), bool(local_writes))
        verdicts = []
        for tp in source_tps:
            verdict = PartitionVerdict(self.direction, topic, tp.partition, target_topic, committed.get(tp))
            verdicts.append(verdict)
            spans = maps.get((Partition(topic, tp.partition), Partition(target_topic, tp.partition)),
                             PartitionMap()).spans
            if hashed and target_partitions:
                verdict.unverified = ("records are spread over the target's partitions by key hash "
                                      "(partitioning: hash or a narrower target): no offset map to pair them")
            elif not spans:
                verdict.note = "nothing copied yet" if verdict.copied_to is None else \
                    "the offset map holds no copies of this partition"
            elif not target_partitions:
                verdict.unverified = f"target topic {target_topic!r} does not exist"
            else:
                target_tp = TopicPartition(target_topic, tp.partition)
                sides = Sides(
                    PartitionLog(source["wire"], tp, self._log_start(source, tp), self._fetch_bytes),
                    PartitionLog(target["wire"], target_tp, self._log_start(target, target_tp), self._fetch_bytes),
                    source_starts[tp], target_starts[target_tp], target_ends[target_tp],
                    source_compacted, bool(target_compacted), self._added_headers)
                check_partition(verdict, spans, sides, writers)
        return verdicts

    def _came_from_target(self) -> Callable[[bytes], bool]:
        """Record mode: a source record whose origin is the target cluster is not copied there."""
        if self._settings.mode != "record":
            return lambda fields: False
        target_id = self._target_id
        return lambda fields: origin_of(decode_fields(fields)[2]) == target_id

    @staticmethod
    def _log_start(side: dict, tp: TopicPartition) -> Callable[[], int]:
        return lambda: side["consumer"].beginning_offsets([tp])[tp]


def verify(config: ReplicatorConfig, directions: list[str], topics: list[str] | None = None) -> list[PartitionVerdict]:
    """One pass over each of `directions`."""
    verdicts = []
    for direction in directions:
        with Verifier(config, direction, topics) as verifier:
            verdicts.extend(verifier.verify())
    return verdicts


def format_table(verdicts: list[PartitionVerdict]) -> str:
    return table(("DIRECTION", "TOPIC", "PARTITION", "TARGET-TOPIC", "COPIED-TO", "COMPARED", "MISSING",
                  "EXTRA", "ALTERED", "GONE-AT-SOURCE", "NOTE"),
                 [(v.direction, v.topic, str(v.partition), v.target_topic, dash(v.copied_to), str(v.compared),
                   str(v.missing), str(v.extra), str(v.altered), str(v.gone_at_source), _note(v))
                  for v in verdicts])


def _note(verdict: PartitionVerdict) -> str:
    figures = [(verdict.gone_at_target, "gone at the target"), (verdict.copied_twice, "copied twice"),
               (verdict.sent_back, "written by a replicator, not copied back"),
               (verdict.unmapped_copies, "copies not in the offset map yet"),
               (verdict.written_on_target, "written on the target")]
    parts = [f"{count} {what}" for count, what in figures if count]
    parts += [text for text in (verdict.unverified and f"not verified: {verdict.unverified}", verdict.note) if text]
    return "; ".join(parts)


def format_discrepancies(verdicts: list[PartitionVerdict]) -> list[str]:
    """One line per run of missing, extra or altered records."""
    lines = []
    for verdict in verdicts:
        where = f"{verdict.direction} {verdict.topic}[{verdict.partition}]"
        for found in verdict.discrepancies:
            lines.append(f"{where}: {found.kind}: {_offsets(found)}: {found.what}")
        if verdict.unlisted:
            lines.append(f"{where}: and {verdict.unlisted} more")
    return lines


def _offsets(found: Discrepancy) -> str:
    def span(side: str, offset: int | None) -> str:
        if found.count == 1:
            return f"{side} offset {offset}"
        return f"{side} offsets {offset}-{offset + found.count - 1}"

    sides = [span(side, offset) for side, offset in (("source", found.source_offset),
                                                      ("target", found.target_offset)) if offset is not None]
    records = f" ({found.count} records)" if found.count > 1 else ""
    return " → ".join(sides) + records


def summary(verdicts: list[PartitionVerdict], seconds: float) -> str:
    compared = sum(v.compared for v in verdicts)
    mismatches = sum(v.mismatches for v in verdicts)
    counts = ", ".join(f"{sum(getattr(v, kind) for v in verdicts)} {kind}" for kind in ("missing", "extra", "altered"))
    gone = sum(v.gone_at_source for v in verdicts)
    unverified = sum(v.unverified is not None for v in verdicts)
    rate = f", {compared / seconds:,.0f} records/s" if seconds > 0 else ""
    return (f"verified {len(verdicts) - unverified} of {len(verdicts)} partitions: {compared:,} records "
            f"compared in {seconds:.1f} s{rate}; {mismatches} mismatches ({counts}); "
            f"{gone} gone at the source")


def verdict_problem(verdicts: list[PartitionVerdict]) -> ProblemFound | None:
    """The error `verify` exits with: mismatches, or partitions it could not verify."""
    mismatched = [v for v in verdicts if v.mismatches]
    unverified = [v for v in verdicts if v.unverified is not None]
    if not mismatched and not unverified:
        return None
    parts = []
    if mismatched:
        parts.append(f"{sum(v.mismatches for v in mismatched)} mismatches in "
                     f"{', '.join(f'{v.topic}[{v.partition}]' for v in mismatched)}")
    if unverified:
        parts.append(f"{len(unverified)} partitions not verified ("
                     f"{', '.join(f'{v.topic}[{v.partition}]' for v in unverified)})")
    return ProblemFound("the copy does not match: " + "; ".join(parts) + " (see the table)")
