"""Exactly-once: the copies of a source partition and its next offset, in one transaction.

Each source partition is written through its own transactional id on the target,
`kafka-replicator.<group>.<topic>.<partition>`, by its own BatchProducer. A transaction
holds the partition's copies and, in the offset map topic, their spans and the
partition's Position (the next source offset to copy): a read_committed reader of the
target sees all of them or none.

Fencing: the member assigned a partition initialises its transactional id before it reads
the partition's Position. The coordinator then aborts the previous owner's open
transaction and refuses that owner's later writes and commits (its epoch is older), so
a member that was paused, cut off or killed-but-not-dead when its partitions moved can
never commit them again.

A transaction's life, every commit interval, for each partition that wrote:
1. before its first write, the target partition and the map topic's partition are added
   to the transaction;
2. the copies go out as transactional batches;
3. once all of them are acknowledged, the spans and the Position go to the map topic;
4. once those are acknowledged, the transaction is committed; then the source group
   gets the same positions, for the tools that read them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from kafka.errors import (
    ClusterAuthorizationFailedError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    TransactionalIdAuthorizationFailedError,
)

from . import map_topic
from .errors import ClusterError, Fenced
from .offset_map import Journal, Partition, Position
from .producer import TRANSACTION_OVER, BatchProducer, Delivery, Shipment

log = logging.getLogger(__name__)

TRANSACTION_TIMEOUT_MS = 60_000
RETRY_BACKOFF_SECONDS = 0.02  # a commit's markers are usually written within a few ms
CALL_TIMEOUT_SECONDS = 30.0
PREFIX = "kafka-replicator"


def transactional_id(group: str, tp) -> str:
    return f"{PREFIX}.{group}.{tp.topic}.{tp.partition}"


@dataclass(eq=False)
class _Writer:
    """One source partition's transactional producer and its open transaction."""

    transactional_id: str
    producer: BatchProducer
    added: set = field(default_factory=set)  # target partitions in the open transaction
    wanted: set = field(default_factory=set)  # to add before the next send

    @property
    def open(self) -> bool:
        return bool(self.added)


class Transactions:
    """The target producer of an exactly-once flow: one transactional writer per source
    partition. It answers to the flow as a BatchProducer does (submit, pump,
    unacknowledged_bytes); `own`, `prepare`, `commit` and `release` run the transactions."""

    def __init__(self, wire, protocol, group: str, source_cluster: str, target: tuple[str, str],
                 max_request_bytes: int, timeout_ms: int,
                 on_written: Callable[[Shipment], None], register: Callable[[list[int]], None]):
        self._wire = wire
        self._protocol = protocol
        self._group = group
        self._source_cluster = source_cluster
        self._side, self._servers = target
        self._max_request_bytes = max_request_bytes
        self._timeout_ms = timeout_ms
        self._on_written = on_written
        self._register = register
        self._writers: dict = {}
        self._coordinators: dict[str, int] = {}

    # What the flow writes through --------------------------------------------------------

    def submit(self, shipment: Shipment) -> None:
        writer = self._writers[shipment.origin]
        if shipment.tp not in writer.added:
            writer.wanted.add(shipment.tp)
        writer.producer.submit(shipment)

    def pump(self, on_answer: Callable) -> None:
        adding = [writer for writer in self._writers.values() if writer.wanted]
        if adding:
            self._add_partitions(adding)
        for writer in self._writers.values():
            writer.producer.pump(on_answer)

    @property
    def unacknowledged_bytes(self) -> int:
        return sum(writer.producer.unacknowledged_bytes for writer in self._writers.values())

    # The transactions ------------------------------------------------------------------------

    def check(self) -> None:
        """At start: that the target grants transactions at all (a ClusterError if not)."""
        self._call({f"{PREFIX}.{self._group}.check":
                    lambda tid: self._protocol.init_transactional_request(tid, TRANSACTION_TIMEOUT_MS)},
                   self._protocol.producer_id_given)

    def owns(self, tp) -> bool:
        return tp in self._writers

    def own(self, partitions) -> None:
        """Take over the partitions' transactional ids: when this returns, every earlier
        owner is fenced and its open transaction aborted."""
        ids = {tp: transactional_id(self._group, tp) for tp in partitions if tp not in self._writers}
        if not ids:
            return
        given = self._call({tid: lambda tid: self._protocol.init_transactional_request(
                                tid, TRANSACTION_TIMEOUT_MS) for tid in ids.values()},
                           self._protocol.producer_id_given)
        self._register(sorted({producer_id for producer_id, _ in given.values()}))
        for tp, tid in ids.items():
            producer_id, epoch = given[tid]
            producer = BatchProducer(self._wire, self._protocol, lambda ident=(producer_id, epoch): ident,
                                     self._max_request_bytes, self._timeout_ms, self._on_written,
                                     transactional_id=tid)
            self._writers[tp] = _Writer(tid, producer)
        log.info("took over transactional ids %s (earlier owners fenced)", ", ".join(sorted(ids.values())))

    def open(self) -> list:
        """Source partitions with an open transaction."""
        return [tp for tp, writer in self._writers.items() if writer.open]

    def committed(self, positions: dict) -> dict:
        """The positions the source group may get: those of partitions still ours with no
        transaction open (a released partition's copies may have been aborted)."""
        return {tp: position for tp, position in positions.items()
                if tp in self._writers and not self._writers[tp].open}

    def prepare(self, positions: dict, journal: Journal) -> Delivery | None:
        """Step 3: each open transaction's spans and Position, to the map topic (whose
        partition every open transaction holds). Call once all their copies are acknowledged."""
        opened = self.open()
        if not opened:
            return None
        delivery = Delivery(len(opened), None)
        for tp in opened:
            entries: list = journal.take([tp])
            if positions.get(tp) is not None:
                entries.append(Position(self._group, self._source_cluster,
                                        Partition(tp.topic, tp.partition), positions[tp]))
            if not entries:
                delivery.part_written()
                continue
            self._writers[tp].producer.submit(
                Shipment(map_topic.PARTITION, len(entries), delivery, data=map_topic.encode(entries)))
        return delivery

    def commit(self) -> list:
        """Step 4: commit every open transaction; returns their source partitions."""
        opened = self.open()
        self._end([self._writers[tp] for tp in opened], commit=True)
        return opened

    def release(self, partitions=None) -> None:
        """Partitions gone to another member (None: all): abort what they still have open,
        and drop them."""
        partitions = list(self._writers) if partitions is None else partitions
        gone = [self._writers.pop(tp) for tp in partitions if tp in self._writers]
        opened = [writer for writer in gone if writer.open]
        if opened:
            try:
                self._end(opened, commit=False)
            except (ClusterError, Fenced) as exc:  # their next owner aborts them anyway
                log.info("could not abort the transactions of released partitions: %s", exc)

    def _add_partitions(self, writers: list[_Writer]) -> None:
        for writer in writers:
            if not writer.added:  # a new transaction: its Position will go to the map topic
                writer.wanted.add(map_topic.PARTITION)
        by_id = {writer.transactional_id: writer for writer in writers}
        self._call({tid: lambda tid: self._protocol.add_partitions_request(
                        tid, by_id[tid].producer.producer_id, by_id[tid].producer.epoch,
                        by_id[tid].wanted) for tid in by_id},
                   lambda answer: (self._protocol.partitions_added(answer),))
        for writer in writers:
            writer.added |= writer.wanted
            writer.wanted = set()

    def _end(self, writers: list[_Writer], commit: bool) -> None:
        if not writers:
            return
        by_id = {writer.transactional_id: writer for writer in writers}
        self._call({tid: lambda tid: self._protocol.end_transaction_request(
                        tid, by_id[tid].producer.producer_id, by_id[tid].producer.epoch, commit)
                    for tid in by_id},
                   lambda answer: (self._protocol.transaction_ended(answer),))
        for writer in writers:
            writer.added = set()

    # Requests to the transaction coordinators ------------------------------------------------

    def _call(self, requests: dict[str, Callable], read: Callable) -> dict[str, tuple]:
        """Each transactional id's request to its coordinator, again after retriable errors,
        until every one succeeded; returns what `read` gave after the error, per id."""
        pending, results = dict(requests), {}
        deadline = time.monotonic() + CALL_TIMEOUT_SECONDS
        last = None
        while pending:
            self._find_coordinators(list(pending), deadline)
            ids = list(pending)
            answers = self._wire.ask([(self._coordinators[tid], pending[tid](tid)) for tid in ids],
                                     self._timeout_ms)
            for tid, answer in zip(ids, answers):
                if isinstance(answer, Exception):
                    error = type(answer)
                    self._coordinators.pop(tid, None)
                else:
                    error, *value = read(answer)
                    if error is None:
                        results[tid] = tuple(value) if len(value) != 1 else value[0]
                        del pending[tid]
                        continue
                    if error in (NotCoordinatorError, CoordinatorNotAvailableError):
                        self._coordinators.pop(tid, None)
                    elif not error.retriable:
                        raise self._refused(tid, error)
                last = error
            if pending:
                if time.monotonic() > deadline:
                    raise self._unanswered(last)
                time.sleep(RETRY_BACKOFF_SECONDS)
        return results

    def _find_coordinators(self, ids: list[str], deadline: float) -> None:
        while True:
            unknown = [tid for tid in ids if tid not in self._coordinators]
            if not unknown:
                return
            answers = self._wire.ask([(None, self._protocol.find_coordinator_request(tid))
                                      for tid in unknown], self._timeout_ms)
            last = None
            for tid, answer in zip(unknown, answers):
                if isinstance(answer, Exception):
                    last = type(answer)
                    continue
                error, node = self._protocol.coordinator_found(answer)
                if error is None:
                    self._coordinators[tid] = node
                elif not error.retriable:
                    raise self._refused(tid, error)
                else:
                    last = error
            if time.monotonic() > deadline:
                raise self._unanswered(last)
            if last is not None:
                time.sleep(RETRY_BACKOFF_SECONDS * 5)

    def _refused(self, tid: str, error: type) -> Exception:
        if issubclass(error, TRANSACTION_OVER):
            return Fenced(tid, error.__name__)
        if issubclass(error, (TransactionalIdAuthorizationFailedError, ClusterAuthorizationFailedError)):
            return ClusterError(
                self._side, self._servers,
                f"exactlyOnce: the target refused transactional id {tid!r} ({error.__name__}); "
                f"grant the replicator's principal Write and Describe on the transactional ids "
                f"prefixed {PREFIX}.{self._group}. and IdempotentWrite on the cluster, e.g. "
                f"kafka-acls.sh --add --allow-principal User:<name> --operation Write --operation "
                f"Describe --transactional-id {PREFIX}.{self._group}. --resource-pattern-type prefixed")
        return ClusterError(self._side, self._servers,
                            f"exactlyOnce: the target refused a transaction request for {tid!r} "
                            f"({error.__name__})")

    def _unanswered(self, last) -> ClusterError:
        return ClusterError(
            self._side, self._servers,
            f"exactlyOnce: no transaction coordinator answered within {CALL_TIMEOUT_SECONDS:.0f}s "
            f"(last answer: {getattr(last, '__name__', last)}); the brokers must be able to create "
            "and lead __transaction_state: transaction.state.log.replication.factor and "
            "transaction.state.log.min.isr must not exceed the brokers up")
