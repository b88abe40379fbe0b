"""The planned switch to the target (`cutover`), once the producers to the source stopped.

It waits until the replicator copied and committed every replicated partition to its end,
syncs the moving consumer groups' offsets a last time, and says what was at risk when it
started, the RPO: per partition the records not copied yet and the age of the oldest of them.

Records are counted as consumer lag counts them, in offsets: the source's log-end offset
minus the replicator's committed offset. A source written with transactions gives each
commit marker and each aborted record an offset too, so there the count is an upper bound.
The age is that of the first record a read_committed reader finds from the committed offset.
"""

from __future__ import annotations

import datetime
import logging
import time
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass

from kafka import KafkaConsumer, TopicPartition

from . import link
from .config import ClusterConfig, ReplicatorConfig
from .errors import ProblemFound
from .group_sync import GroupSync
from .tables import dash, table
from .translation import Translator, coordinated

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
READ_SECONDS = 10.0  # the longest search for the oldest uncopied record of one partition
NAMED_BEHIND = 10  # partitions behind that the error names; the table has them all
SOURCE_END = "(source end)"  # the label under which the partitions' ends are translated


@dataclass(frozen=True)
class Backlog:
    """One source partition's records not copied yet, at one moment."""

    end: int  # the source's log-end offset
    copied_to: int  # the replicator's committed offset (the log start if it has none)

    @property
    def records(self) -> int:
        return max(0, self.end - self.copied_to)


@dataclass(frozen=True)
class PartitionCutover:
    topic: str
    partition: int
    source_end: int
    copied_to: int
    target_topic: str
    target_end: int | None  # the target partition's log-end offset: what it holds
    target_position: int | None  # where a consumer that read the whole source partition resumes
    rpo_records: int  # not copied when the command started
    rpo_seconds: float  # the age then of the oldest of them (0 without any)
    behind: int  # not copied when the command ended
    behind_seconds: float | None  # the age then of the oldest of those
    note: str | None = None

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GroupMove:
    """One partition of a moving group: its source offset, translated, and what the target holds."""

    group: str
    topic: str
    partition: int
    source_offset: int
    target_topic: str | None
    target_offset: int | None  # the translation of source_offset
    on_target: int | None  # the group's committed offset on the target after the sync
    note: str | None = None

    def as_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    direction: str
    started: float  # seconds since the epoch
    waited_seconds: float
    partitions: list[PartitionCutover]
    groups: list[GroupMove]
    problems: list[str]  # empty: consumers can move now, nothing lost, nothing read twice

    @property
    def rpo_records(self) -> int:
        return sum(p.rpo_records for p in self.partitions)

    @property
    def rpo_seconds(self) -> float:
        return max((p.rpo_seconds for p in self.partitions), default=0.0)

    def as_json(self) -> dict:
        return {"direction": self.direction, "started": _iso(self.started, "milliseconds"),
                "waited_seconds": round(self.waited_seconds, 3),
                "rpo": {"records": self.rpo_records, "seconds": self.rpo_seconds},
                "ready": not self.problems, "problems": self.problems,
                "partitions": [p.as_json() for p in self.partitions],
                "groups": [g.as_json() for g in self.groups]}


class Cutover:
    """One direction's planned switch; `groups` None: those `syncGroupOffsets` follows."""

    def __init__(self, config: ReplicatorConfig, direction: str, groups: list[str] | None = None):
        self.config = config
        self.direction = direction
        if groups is None and not config.direction(direction).sync_group_offsets.enabled:
            groups = []
        self._named = groups
        self._sync = GroupSync(config, direction, groups)
        self._hashed = config.direction(direction).partitioning == "hash"
        (self._source_side, self._source), (self._target_side, self._target) = config.clusters(direction)

    def run(self, timeout: float) -> Report:
        started, begun = time.time(), time.monotonic()
        with ExitStack() as stack:
            translator = stack.enter_context(Translator(self.config, self.direction))
            groups = self._groups(translator)
            source = stack.enter_context(closing(self._consumer(self._source_side, self._source)))
            reader = stack.enter_context(closing(self._consumer(self._source_side, self._source,
                                                                isolation_level="read_committed")))
            partitions = self._partitions(source, translator.routes)
            first = self._backlog(translator, source, partitions)
            rpo = self._ages(reader, first, started)
            last = self._drain(translator, source, first, begun + timeout)
            waited = time.monotonic() - begun
            behind = {tp: backlog for tp, backlog in last.items() if backlog.records}
            late = self._ages(reader, behind, time.time())
            problems = []
            if behind:
                problems.append(_behind(behind, late, len(partitions), timeout))
            moved = {tp: last[tp].end - first[tp].end for tp in partitions if last[tp].end != first[tp].end}
            if moved:
                problems.append(_still_written(moved))
            positions = self._positions(translator, last, problems)
            target_ends = self._target_ends(translator.routes, partitions)
            moves = []
            if groups and not behind:
                moves = self._move(groups, problems)
        rows = [PartitionCutover(
            tp.topic, tp.partition, last[tp].end, last[tp].copied_to, translator.routes[tp.topic],
            target_ends.get(tp), positions[tp][0], first[tp].records, _seconds(rpo.get(tp)),
            last[tp].records, None if tp not in late else _seconds(late[tp]),
            _note(last[tp], late.get(tp)) or positions[tp][1]) for tp in partitions]
        return Report(self.direction, started, waited, rows, moves, problems)

    def _consumer(self, side: str, cluster: ClusterConfig, **settings) -> KafkaConsumer:
        with link.reaching(side, cluster):
            return KafkaConsumer(**link.client_settings(cluster), enable_auto_commit=False, **settings)

    def _groups(self, translator: Translator) -> list[str]:
        """The groups to move, checked before any wait: each commits a replicated topic on the
        source, and none has members on the target."""
        if self._named is None:
            with link.reaching(self._source_side, self._source):
                listed = [group["group_id"] for group in translator.source_admin.list_groups()]
            groups = [group for group in self._sync.chosen(listed)
                      if any(tp.topic in translator.routes for tp in translator.committed(group))]
        else:
            own = sorted(set(self._named) & self._sync.own)
            if own:
                raise ProblemFound(f"{', '.join(own)}: the replicator's own consumer group; --groups names "
                                   "the groups of the applications that move to the target")
            groups = sorted(set(self._named))
            for group in groups:
                translator.replicated(group, translator.committed(group))
        active = self._sync.active_on_target(groups)
        if active:
            raise ProblemFound(self._refusal(active))
        return groups

    def _refusal(self, active: dict[str, int]) -> str:
        named = ", ".join(f"{group} ({count} members)" if count else group
                          for group, count in sorted(active.items()))
        return (f"consumer groups with active members on the {self._target_side} cluster "
                f"({self._target.bootstrap_servers}): {named}; syncing their offsets would overwrite "
                "the offsets those members commit there. Stop them (or leave the groups out of "
                "--groups) and run cutover again")

    def _partitions(self, source: KafkaConsumer, routes: dict[str, str]) -> list[TopicPartition]:
        with link.reaching(self._source_side, self._source):
            partitions = [TopicPartition(topic, p) for topic in sorted(routes)
                          for p in sorted(source.partitions_for_topic(topic) or ())]
        if not partitions:
            raise ProblemFound(f"{self._source_side} cluster ({self._source.bootstrap_servers}): none of "
                               f"the topics {self.direction} replicates exists there; nothing to cut over")
        return partitions

    def _backlog(self, translator: Translator, source: KafkaConsumer,
                 partitions: list[TopicPartition]) -> dict[TopicPartition, Backlog]:
        committed = translator.committed(self.config.group(self.direction).group_id)
        with link.reaching(self._source_side, self._source):
            ends = source.end_offsets(partitions)
            starts = source.beginning_offsets(partitions)
        # Records the source deleted before they were copied cannot be copied any more.
        return {tp: Backlog(ends[tp], max(committed.get(tp, starts[tp]), starts[tp])) for tp in partitions}

    def _drain(self, translator: Translator, source: KafkaConsumer, backlog: dict[TopicPartition, Backlog],
               deadline: float) -> dict[TopicPartition, Backlog]:
        """The backlog once nothing is left to copy, or at the deadline."""
        shown = None
        while True:
            behind = sum(b.records for b in backlog.values())
            if not behind or time.monotonic() >= deadline:
                return backlog
            if behind != shown:
                log.info("cutover: waiting for the replicator to copy and commit %d records in %d "
                         "partitions", behind, sum(bool(b.records) for b in backlog.values()))
                shown = behind
            time.sleep(POLL_SECONDS)
            backlog = self._backlog(translator, source, list(backlog))

    def _ages(self, reader: KafkaConsumer, backlog: dict[TopicPartition, Backlog],
              now: float) -> dict[TopicPartition, float | None]:
        """Per partition behind: the age at `now` of its oldest record not copied yet (None: the
        uncopied offsets hold no committed record, only markers or aborted records)."""
        ages = {}
        for tp, b in backlog.items():
            if b.records:
                timestamp = self._first_timestamp(reader, tp, b.copied_to, b.end)
                ages[tp] = None if timestamp is None else max(0.0, now - timestamp)
        return ages

    def _first_timestamp(self, reader: KafkaConsumer, tp: TopicPartition, offset: int, end: int) -> float | None:
        with link.reaching(self._source_side, self._source):
            reader.assign([tp])
            reader.seek(tp, offset)
            stable = min(end, reader.end_offsets([tp])[tp])  # a read_committed reader stops there
            deadline = time.monotonic() + READ_SECONDS
            while reader.position(tp) < stable and time.monotonic() < deadline:
                records = reader.poll(timeout_ms=500, max_records=1).get(tp)
                if records:
                    return records[0].timestamp / 1000
        return None

    def _positions(self, translator: Translator, backlog: dict[TopicPartition, Backlog],
                   problems: list[str]) -> dict[TopicPartition, tuple[int | None, str | None]]:
        """Per partition, where a consumer that read it to its end resumes on the target (or why
        that cannot be said)."""
        try:
            maps = translator.maps()
        except ProblemFound as missing:
            problems.append(str(missing))
            return {tp: (None, "no offset map") for tp in backlog}
        rows = translator.translate(SOURCE_END, {tp: b.end for tp, b in backlog.items()}, maps)
        return {TopicPartition(row.topic, row.partition): (row.target_offset, row.reason) for row in rows}

    def _target_ends(self, routes: dict[str, str], partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The target's log-end offset of each source partition's copy (none where keys spread it)."""
        if self._hashed:
            return {}
        with closing(self._consumer(self._target_side, self._target)) as target, \
                link.reaching(self._target_side, self._target):
            present = {TopicPartition(topic, p) for topic in set(routes.values())
                       for p in target.partitions_for_topic(topic) or ()}
            copies = {tp: TopicPartition(routes[tp.topic], tp.partition) for tp in partitions}
            ends = target.end_offsets([copy for copy in copies.values() if copy in present])
        return {tp: ends[copy] for tp, copy in copies.items() if copy in ends}

    def _move(self, groups: list[str], problems: list[str]) -> list[GroupMove]:
        """The last group offset sync, then each group's offsets on the target read back."""
        self._sync.sync_once()
        if self._sync.figures.active:
            problems.append(self._refusal({group: 0 for group in self._sync.figures.active}))
        moving = [group for group in groups if group not in self._sync.figures.active]
        admin = link.admin_client(self._target_side, self._target)
        try:
            with link.reaching(self._target_side, self._target):
                held = {group: {tp: meta.offset for tp, meta in
                                coordinated(admin.list_group_offsets, {group: None}).get(group, {}).items()}
                        for group in moving}
        finally:
            admin.close()
        moves = []
        for group in moving:
            rows = self._sync.positions.get(group)
            if rows is None:
                problems.append(f"{group}: not found on the {self._source_side} cluster at the sync")
                continue
            for row in rows:
                on_target = (None if row.target_topic is None
                             else held[group].get(TopicPartition(row.target_topic, row.partition)))
                moves.append(GroupMove(group, row.topic, row.partition, row.committed, row.target_topic,
                                       row.target_offset, on_target, row.reason))
                problem = _misplaced(group, row, on_target)
                if problem:
                    problems.append(problem)
        return moves


def _misplaced(group: str, row, on_target: int | None) -> str | None:
    """What stops a group's consumers moving, in one partition; None if nothing does."""
    if row.target_topic is None:
        return None  # a topic this direction does not copy: the group stays where it reads it
    if row.target_offset is None:
        return f"{group}: {row.topic}[{row.partition}] at {row.committed} cannot be translated: {row.reason}"
    if on_target == row.target_offset:
        return None
    where = (f"{group}: {row.target_topic}[{row.partition}] is at {dash(on_target)} on the target, "
             f"{{}} {row.target_offset}, the translation of source offset {row.committed}")
    if on_target is not None and on_target > row.target_offset:
        return (where.format("ahead of") + " (the sync never moves an offset backwards): its consumers "
                f"would skip {on_target - row.target_offset} records; if that offset is stale, reset it "
                f"with kafka-consumer-groups.sh --reset-offsets --to-offset {row.target_offset} and run "
                "cutover again")
    return where.format("not at")


def _behind(behind: dict[TopicPartition, Backlog], ages: dict, total: int, timeout: float) -> str:
    named = [f"{tp.topic}[{tp.partition}] {_note(b, ages.get(tp))}" for tp, b in sorted(behind.items())]
    if len(named) > NAMED_BEHIND:
        named = named[:NAMED_BEHIND] + [f"{len(named) - NAMED_BEHIND} more (see the table)"]
    return (f"{len(behind)} of {total} partitions not copied and committed after {timeout:g}s: "
            + "; ".join(named) + ". Check that the replicator runs (kafka-replicator status shows its "
            "members and lag)")


def _still_written(moved: dict[TopicPartition, int]) -> str:
    return ("the source's end moved while cutover ran (" + ", ".join(
        f"{tp.topic}[{tp.partition}] +{n}" for tp, n in sorted(moved.items()))
        + "): producers still write to it; stop them and run cutover again")


def _note(backlog: Backlog, age: float | None) -> str | None:
    if not backlog.records:
        return None
    oldest = "" if age is None else f", the oldest {_seconds(age):.1f}s old"
    return (f"{backlog.records} records behind (copied to {backlog.copied_to} of {backlog.end}){oldest}")


def _seconds(age: float | None) -> float:
    return 0.0 if age is None else round(age, 3)


def _iso(epoch: float, timespec: str = "seconds") -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat(timespec=timespec)


def format_report(report: Report) -> str:
    done = ("every replicated partition copied and committed" if not any(p.behind for p in report.partitions)
            else "partitions still behind")
    lines = [f"cutover {report.direction}: started {_iso(report.started)}; {done} after "
             f"{report.waited_seconds:.1f}s",
             table(("TOPIC", "PARTITION", "SOURCE-END", "COPIED-TO", "TARGET-TOPIC", "TARGET-END",
                    "TARGET-POSITION", "RPO-RECORDS", "RPO-SECONDS", "NOTE"),
                   [(p.topic, str(p.partition), str(p.source_end), str(p.copied_to), p.target_topic,
                     dash(p.target_end), dash(p.target_position), str(p.rpo_records), f"{p.rpo_seconds:.1f}",
                     p.note or "") for p in report.partitions]),
             f"RPO (not copied when cutover started): {report.rpo_records} records, the oldest "
             f"{report.rpo_seconds:.1f}s old" if report.rpo_records else
             "RPO: 0 records, 0s (everything was copied when cutover started)"]
    if report.groups:
        lines += ["", table(("GROUP", "TOPIC", "PARTITION", "SOURCE-OFFSET", "TARGET-TOPIC", "TARGET-OFFSET",
                             "ON-TARGET", "NOTE"),
                            [(g.group, g.topic, str(g.partition), str(g.source_offset), g.target_topic or "-",
                              dash(g.target_offset), dash(g.on_target), g.note or "") for g in report.groups])]
    if not report.problems:
        moved = sorted({g.group for g in report.groups})
        lines.append(f"consumers of {', '.join(moved)} can move to the target now: nothing lost, nothing read twice"
                     if moved else "nothing is left to copy; no group named, so no offsets were synced")
    return "\n".join(lines)
