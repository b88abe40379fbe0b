"""The idempotent batch producer: sequences, retries, rejections, in-flight limits."""

from __future__ import annotations

import itertools

from kafka.errors import (
    DuplicateSequenceNumberError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumberError,
    UnknownProducerIdError,
)
from kafka.structs import TopicPartition

from replicator import batches, producer
from replicator.producer import BatchProducer, Delivery, Shipment, Superseded

from batch_support import rec

A = TopicPartition("t", 0)
B = TopicPartition("t", 1)


class Sent:
    """One request as the fake wire saw it: batches per partition, answered by the test."""

    def __init__(self, batches_by_tp):
        self.batches = batches_by_tp
        self._callbacks = []

    def add_both(self, callback):
        self._callbacks.append(callback)

    def answer(self, errors=None):
        answer = {tp: ((errors or {}).get(tp), 0) for tp in self.batches}
        for callback in self._callbacks:
            callback(answer)

    def fail(self, error):
        for callback in self._callbacks:
            callback(error)

    def sequence(self, tp) -> int:
        return batches.split(self.batches[tp])[0].base_sequence


class FakeWire:
    def __init__(self):
        self.requests: list[Sent] = []

    def leader(self, tp):
        return "node-1"

    def refresh(self):
        pass

    def send(self, node, request):
        sent = Sent(request)
        self.requests.append(sent)
        return sent


class Protocol:
    @staticmethod
    def produce_request(batches_by_tp, timeout_ms, transactional_id=None):
        return batches_by_tp

    @staticmethod
    def produced(answer):
        return answer


class Harness:
    def __init__(self):
        self.wire = FakeWire()
        ids = itertools.count(100)
        self.producer = BatchProducer(self.wire, Protocol, lambda: (next(ids), 0),
                                      max_request_bytes=1 << 20, timeout_ms=1000)
        self.events = []

    def ship(self, tp, records=2) -> Delivery:
        delivery = Delivery(1, 0)
        data = batches.encode([rec(i) for i in range(records)])
        self.producer.submit(Shipment(tp, records, delivery, data=data))
        return delivery

    def confirmed(self, *tps) -> "Harness":
        """One record per partition written and acknowledged: the target knows the producer
        there, and the lanes may pipeline."""
        for tp in tps:
            self.ship(tp, records=1)
        for request in self.pump():
            request.answer()
        self.deliver()
        return self

    def pump(self) -> list[Sent]:
        before = len(self.wire.requests)
        self.producer.pump(self.events.append)
        return self.wire.requests[before:]

    def deliver(self):
        """Hand the answers back as the flow does."""
        events, self.events = self.events, []
        for event in events:
            event.producer.answered(event.node, event.shipments, event.answer)


def test_sequences_count_records_per_partition():
    h = Harness().confirmed(A, B)
    h.ship(A, records=3)
    h.ship(A, records=2)
    h.ship(B, records=4)
    requests = h.pump()
    assert [r.sequence(A) for r in requests if A in r.batches] == [1, 4]
    assert [r.sequence(B) for r in requests if B in r.batches] == [1]


def test_a_new_partition_has_one_batch_in_flight_until_the_target_acknowledged_one():
    """A broker takes any sequence as the first of a producer it does not know: a second
    batch must not be able to arrive before the first."""
    h = Harness()
    h.ship(A)
    h.ship(A)
    [first] = h.pump()
    assert h.pump() == []
    first.answer()
    h.deliver()
    [second] = h.pump()
    assert second.sequence(A) == 2


def test_a_request_carries_at_most_one_batch_per_partition():
    h = Harness().confirmed(A, B)
    for _ in range(3):
        h.ship(A)
        h.ship(B)
    requests = h.pump()
    assert len(requests) == 3
    assert all(set(r.batches) == {A, B} for r in requests)


def test_at_most_five_batches_per_partition_are_in_flight():
    h = Harness().confirmed(A)
    for _ in range(8):
        h.ship(A)
    assert len(h.pump()) == producer.MAX_IN_FLIGHT_PER_PARTITION
    assert h.pump() == []


def test_an_acknowledged_batch_completes_its_delivery():
    h = Harness()
    delivery = h.ship(A)
    [request] = h.pump()
    request.answer()
    h.deliver()
    assert delivery.is_done and delivery.exception is None
    assert h.producer.unacknowledged_bytes == 0


def test_a_retriable_error_resends_the_batches_with_the_same_sequences_in_order(monkeypatch):
    monkeypatch.setattr(producer, "RETRY_BACKOFF_SECONDS", 0)
    h = Harness().confirmed(A)
    first, second = h.ship(A, records=2), h.ship(A, records=3)
    r1, r2 = h.pump()
    r1.answer({A: NotLeaderForPartitionError})
    r2.answer({A: OutOfOrderSequenceNumberError})  # the broker refuses the gap behind it
    h.deliver()
    assert not first.is_done and not second.is_done
    again = h.pump()
    assert [r.sequence(A) for r in again] == [1, 3]
    for request in again:
        request.answer()
    h.deliver()
    assert first.is_done and second.is_done and not first.exception and not second.exception


def test_a_lost_connection_resends_everything_it_carried(monkeypatch):
    monkeypatch.setattr(producer, "RETRY_BACKOFF_SECONDS", 0)
    h = Harness()
    h.ship(A)
    h.ship(B)
    [request] = h.pump()
    request.fail(ConnectionError("reset by peer"))
    h.deliver()
    [again] = h.pump()
    assert set(again.batches) == {A, B} and again.sequence(A) == 0


def test_a_duplicate_sequence_is_a_batch_already_written():
    h = Harness()
    delivery = h.ship(A)
    [request] = h.pump()
    request.answer({A: DuplicateSequenceNumberError})
    h.deliver()
    assert delivery.is_done and delivery.exception is None


def test_a_rejected_batch_fails_alone_and_supersedes_the_batches_behind_it():
    h = Harness().confirmed(A, B)
    rejected, behind = h.ship(A, records=2), h.ship(A, records=1)
    other = h.ship(B)
    r1, r2 = h.pump()
    r1.answer({A: MessageSizeTooLargeError})
    r2.answer({A: OutOfOrderSequenceNumberError})
    h.deliver()
    assert isinstance(rejected.exception, MessageSizeTooLargeError)
    assert isinstance(behind.exception, Superseded) and behind.exception.retriable
    assert other.is_done and other.exception is None
    assert h.producer.unacknowledged_bytes == 0


def test_a_batch_withdrawn_before_it_was_sent_is_never_sent():
    """A batch submitted between a rejection and the flow's rewind would otherwise take the
    rejected batch's sequence and be written after the record the target refused."""
    h = Harness().confirmed(A)
    h.ship(A, records=2)
    [rejected] = h.pump()
    rejected.answer({A: MessageSizeTooLargeError})
    h.deliver()
    late = h.ship(A, records=1)
    late.withdraw()
    assert h.pump() == []
    assert not late.is_done and h.producer.unacknowledged_bytes == 0
    h.ship(A, records=1)
    [resent] = h.pump()
    assert resent.sequence(A) == 1


def test_after_a_rejection_the_partition_continues_from_the_rejected_sequence():
    h = Harness()
    h.ship(A, records=2)
    [first] = h.pump()
    first.answer()
    h.deliver()
    h.ship(A, records=3)
    [rejected] = h.pump()
    rejected.answer({A: MessageSizeTooLargeError})
    h.deliver()
    h.ship(A, records=1)
    [next_request] = h.pump()
    assert next_request.sequence(A) == 2


def test_an_unknown_producer_id_takes_a_new_id_and_numbers_from_zero():
    h = Harness()
    h.ship(A, records=2)
    [request] = h.pump()
    request.answer({A: UnknownProducerIdError})
    h.deliver()
    [again] = h.pump()
    [batch] = batches.split(again.batches[A])
    assert (batch.producer_id, batch.base_sequence) == (101, 0)
