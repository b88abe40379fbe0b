"""The target producer of the batch data path: whole batches, idempotent, pipelined.

Every batch is written with our producer id and a sequence number per target
partition, so a request retried after a lost answer is recognised by the broker
and never duplicated or reordered. Up to five batches per partition are in flight
(the broker's limit for idempotent producers), at most one per partition in each
request (a broker rule since produce v3), so many partitions share a request.

A partition (a Lane) moves through its queue in order:

1. A batch is stamped with the lane's next sequence when it is sent. Until the target
   acknowledged one, a lane has one batch in flight: a broker takes any sequence as
   the first of a producer it does not know yet, so a later batch arriving first (its
   predecessor refused by a full or lost connection) would be written before it.
2. A retriable error (leader moved, timeout, lost connection) holds the lane; once
   its in-flight batches are answered, the unacknowledged ones are sent again from
   the first, with the same sequences.
3. A batch the target rejects for good fails its Delivery; the batches queued behind
   it in that lane fail as `Superseded` (they were not written: the broker refuses
   sequences after a gap), and the lane continues from the rejected batch's
   sequence. Other lanes are not affected. A batch submitted after that, before the
   flow rewound its partition, is withdrawn with the rewind and never sent: sent, it
   would take the rejected batch's sequence and be written out of place.
4. If the broker no longer knows our producer (its state expired), all lanes drain
   and the producer takes a new id: the only case where a retry may duplicate.
   A transactional producer never does: its transaction is over (`Fenced`), and what
   it wrote in it is aborted.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from kafka.errors import (
    DuplicateSequenceNumberError,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    InvalidTxnStateError,
    KafkaError,
    OutOfOrderSequenceNumberError,
    ProducerFencedError,
    TransactionAbortableError,
    UnknownProducerIdError,
)

from . import batches
from .errors import Fenced

log = logging.getLogger(__name__)

MAX_IN_FLIGHT_PER_PARTITION = 5
MAX_REQUESTS_PER_NODE = 5
SEQUENCE_LIMIT = 2**31
RETRY_BACKOFF_SECONDS = 0.1
# Answers after which a transaction can only be aborted, and its producer is not ours anymore.
TRANSACTION_OVER = (ProducerFencedError, InvalidProducerEpochError, UnknownProducerIdError,
                    InvalidProducerIdMappingError, InvalidTxnStateError, TransactionAbortableError)


class Superseded(KafkaError):
    """Not written: a batch before it in the same target partition was rejected."""

    retriable = True


class Delivery:
    """The outcome of writing one source range: done once every part is acknowledged.

    It looks like a finished future to the Checkpoint: `is_done` and `exception`.
    """

    __slots__ = ("parts", "is_done", "exception", "timestamp", "topic", "withdrawn")

    def __init__(self, parts: int, timestamp: int | None, topic: str | None = None):
        self.parts = parts
        self.is_done = parts == 0
        self.exception = None
        self.timestamp = timestamp
        self.topic = topic  # the source topic of the records, for the latency per topic
        self.withdrawn = False

    def part_written(self) -> None:
        self.parts -= 1
        if self.parts == 0 and not self.is_done:
            self.is_done = True

    def fail(self, error: BaseException) -> None:
        if not self.is_done:
            self.is_done = True
            self.exception = error

    def withdraw(self) -> None:
        """The range is read again (or its partition stopped): parts not sent yet never are."""
        self.withdrawn = True


@dataclass(eq=False)
class Shipment:
    """One batch for one target partition. `copy` is a source batch to rewrite, else
    `data` is a batch we built. `runs` are the (source offset, count) runs of `origin`
    (the source partition) that it carries; once acknowledged, `offset` is where the
    target wrote its first record."""

    tp: object
    records: int
    delivery: Delivery
    copy: batches.Batch | None = None
    data: bytes | None = None
    origin: object = None
    runs: tuple = ()
    sequence: int = -1
    state: str = "queued"  # queued → sent → acked; or dropped
    offset: int = -1

    @property
    def size(self) -> int:
        return self.copy.size if self.copy is not None else len(self.data)

    def stamped(self, producer_id: int, epoch: int, transactional: bool) -> bytes:
        if self.copy is not None:
            return batches.rewrite(self.copy, producer_id, epoch, self.sequence, transactional)
        return batches.stamp(self.data, producer_id, epoch, self.sequence, transactional)


@dataclass(frozen=True)
class ProduceAnswer:
    """What the IO thread hands back for one produce request: the response, or the exception
    that ended it, for `producer` to read (`answered`)."""

    producer: BatchProducer
    node: object
    shipments: list
    answer: object


@dataclass(eq=False)
class Lane:
    """One target partition's unacknowledged batches, in order."""

    queue: deque = field(default_factory=deque)
    in_flight: int = 0
    next_sequence: int = 0
    acked_sequence: int = 0
    hold: bool = False
    retry_at: float = 0.0
    confirmed: bool = False  # the target acknowledged a batch of this producer here

    @property
    def limit(self) -> int:
        return MAX_IN_FLIGHT_PER_PARTITION if self.confirmed else 1


class BatchProducer:
    """Writes shipments to a cluster over a Wire-like object.

    `wire` needs leader(tp), refresh(), send(node, request) -> Future; `protocol`
    builds requests and reads answers (replicator.wire in production). `on_answer`
    is how the IO thread hands an answer back: it must only enqueue. `on_written`
    hears of every acknowledged shipment that carries source runs, in its lane's order.
    With a `transactional_id`, batches are written in that id's open transaction (the
    caller adds their partitions to it first) and `new_producer_id` is asked only once.
    """

    def __init__(self, wire, protocol, new_producer_id: Callable[[], tuple[int, int]],
                 max_request_bytes: int, timeout_ms: int,
                 on_written: Callable[[Shipment], None] | None = None,
                 transactional_id: str | None = None):
        self.transactional_id = transactional_id
        self._wire = wire
        self._on_written = on_written
        self._protocol = protocol
        self._new_producer_id = new_producer_id
        self._max_request_bytes = max_request_bytes
        self._timeout_ms = timeout_ms
        self._lanes: dict[object, Lane] = {}
        self._queued: dict[object, Lane] = {}  # the lanes with batches, all a round looks at
        self._requests: dict[object, int] = {}
        self._reset_needed = False
        self.unacknowledged_bytes = 0
        self.producer_id, self.epoch = new_producer_id()

    def submit(self, shipment: Shipment) -> None:
        lane = self._lanes.get(shipment.tp)
        if lane is None:
            lane = self._lanes[shipment.tp] = Lane()
        self._queued[shipment.tp] = lane
        lane.queue.append(shipment)
        self.unacknowledged_bytes += shipment.size

    def pump(self, on_answer: Callable) -> None:
        """Send what may be sent now: one request per ready node, repeatedly."""
        if self._reset_needed:
            if any(lane.in_flight for lane in self._lanes.values()):
                return
            self._reset()
        now = time.monotonic()
        by_node: dict[object, list[Shipment]] = {}
        emptied = []
        for tp, lane in self._queued.items():
            if not lane.queue:
                emptied.append(tp)
                continue
            if lane.hold and lane.in_flight == 0 and now >= lane.retry_at:
                self._resume(lane)
            if lane.hold or lane.in_flight >= lane.limit:
                continue
            ready = self._next_queued(lane, lane.limit - lane.in_flight)
            if not ready:
                continue
            node = self._wire.leader(tp)
            if node is None:
                self._wire.refresh()
                continue
            by_node.setdefault(node, []).append((lane, ready))
        for tp in emptied:
            del self._queued[tp]
        for node, lanes in by_node.items():
            while self._requests.get(node, 0) < MAX_REQUESTS_PER_NODE and lanes:
                lanes = self._send_one(node, lanes, on_answer)

    def _next_queued(self, lane: Lane, limit: int) -> list[Shipment]:
        """The lane's next unsent shipments (sent ones form a short prefix of its queue),
        leaving out for good the withdrawn ones never sent."""
        ready, withdrawn = [], []
        for shipment in lane.queue:
            if shipment.state != "queued":
                continue
            if shipment.sequence == -1 and shipment.delivery.withdrawn:
                withdrawn.append(shipment)
                continue
            ready.append(shipment)
            if len(ready) == limit:
                break
        for shipment in withdrawn:
            shipment.state = "dropped"
            lane.queue.remove(shipment)
            self.unacknowledged_bytes -= shipment.size
        return ready

    def _send_one(self, node, lanes, on_answer):
        """Send one request to `node` with the next batch of each lane; return lanes left."""
        chosen: list[Shipment] = []
        size = 0
        left = []
        for lane, ready in lanes:
            shipment = ready[0]
            if chosen and size + shipment.size > self._max_request_bytes:
                left.append((lane, ready))
                continue
            shipment.sequence = lane.next_sequence
            lane.next_sequence = (lane.next_sequence + shipment.records) % SEQUENCE_LIMIT
            shipment.state = "sent"
            lane.in_flight += 1
            size += shipment.size
            chosen.append(shipment)
            rest = ready[1:]
            if rest and lane.in_flight < lane.limit:
                left.append((lane, rest))
        transactional = self.transactional_id is not None
        request = self._protocol.produce_request(
            {s.tp: s.stamped(self.producer_id, self.epoch, transactional) for s in chosen},
            self._timeout_ms, self.transactional_id)
        self._requests[node] = self._requests.get(node, 0) + 1
        future = self._wire.send(node, request)
        future.add_both(lambda answer: on_answer(ProduceAnswer(self, node, chosen, answer)))
        return left

    def answered(self, node, chosen: list[Shipment], answer) -> list[Delivery]:
        """Handle one request's answer (a response, or the exception that ended it).

        Returns the deliveries it completed.
        """
        self._requests[node] -= 1
        completed = []
        results = None if isinstance(answer, BaseException) else self._protocol.produced(answer)
        for shipment in chosen:
            lane = self._lanes[shipment.tp]
            lane.in_flight -= 1
            if shipment.state != "sent":
                continue  # dropped behind a rejected batch while in flight
            if results is None:  # the request itself failed: no broker refused anything
                self._retry(lane, shipment)
                continue
            error, shipment.offset = results.get(shipment.tp, (KafkaError, -1))
            if error is None or error is DuplicateSequenceNumberError:
                self._acked(lane, shipment)
                if shipment.runs and self._on_written is not None:
                    self._on_written(shipment)
                if shipment.delivery.is_done:
                    completed.append(shipment.delivery)
            else:
                self._failed(lane, shipment, error())
        return completed

    def _acked(self, lane: Lane, shipment: Shipment) -> None:
        shipment.state = "acked"
        lane.confirmed = True
        shipment.delivery.part_written()
        while lane.queue and lane.queue[0].state == "acked":
            done = lane.queue.popleft()
            self.unacknowledged_bytes -= done.size
            lane.acked_sequence = (done.sequence + done.records) % SEQUENCE_LIMIT

    def _failed(self, lane: Lane, shipment: Shipment, error: BaseException) -> None:
        state_lost = isinstance(error, (UnknownProducerIdError, InvalidProducerEpochError)) or (
            isinstance(error, OutOfOrderSequenceNumberError) and not lane.hold
            and lane.queue and lane.queue[0] is shipment)
        if self.transactional_id is not None and (state_lost or isinstance(error, TRANSACTION_OVER)):
            raise Fenced(self.transactional_id, type(error).__name__)
        if state_lost:
            # The broker lost our producer's state (or never had it): nothing before
            # this batch is missing, so no earlier failure explains the refusal.
            log.warning("target no longer knows producer id %d (%s); taking a new one",
                        self.producer_id, type(error).__name__)
            self._reset_needed = True
            shipment.state = "queued"
            lane.hold = True
            return
        if getattr(error, "retriable", False) or isinstance(error, OutOfOrderSequenceNumberError):
            self._retry(lane, shipment)
            return
        # Rejected for good: this batch and everything queued behind it leave the lane.
        position = lane.queue.index(shipment)
        shipment.state = "dropped"
        shipment.delivery.fail(error)
        for later in list(lane.queue)[position + 1:]:
            later.state = "dropped"
            later.delivery.fail(Superseded())
        while len(lane.queue) > position:
            self.unacknowledged_bytes -= lane.queue.pop().size
        lane.hold = True

    def _retry(self, lane: Lane, shipment: Shipment) -> None:
        shipment.state = "queued"
        if not lane.hold:
            lane.hold = True
            lane.retry_at = time.monotonic() + RETRY_BACKOFF_SECONDS
            self._wire.refresh()

    def _resume(self, lane: Lane) -> None:
        """Send the lane's unacknowledged batches again, numbered from the last ack."""
        lane.hold = False
        lane.next_sequence = lane.acked_sequence
        for shipment in lane.queue:
            shipment.state = "queued"

    def _reset(self) -> None:
        self.producer_id, self.epoch = self._new_producer_id()
        self._reset_needed = False
        for lane in self._lanes.values():
            lane.acked_sequence = 0
            lane.confirmed = False
            self._resume(lane)
