"""Transactions without Kafka: what is asked of the transaction coordinators, and what
their refusals become. (tests/test_exactly_once.py runs the same code against brokers.)"""

from __future__ import annotations

import pytest
from kafka.errors import (
    ConcurrentTransactionsError,
    CoordinatorNotAvailableError,
    ProducerFencedError,
    TransactionalIdAuthorizationFailedError,
)
from kafka.structs import TopicPartition

from replicator import map_topic, transactions
from replicator.errors import ClusterError, Fenced
from replicator.offset_map import Entry, Journal, Partition, Position
from replicator.producer import Delivery, Shipment
from replicator.transactions import Transactions

SOURCE = TopicPartition("orders", 3)
TARGET = TopicPartition("orders.copy", 3)


class Protocol:
    """Requests as tuples; answers are (error, values...) tuples the test scripts."""

    find_coordinator_request = staticmethod(lambda tid: ("find", tid))
    coordinator_found = staticmethod(lambda answer: answer)
    init_transactional_request = staticmethod(lambda tid, timeout: ("init", tid))
    producer_id_given = staticmethod(lambda answer: answer)
    add_partitions_request = staticmethod(lambda tid, pid, epoch, tps: ("add", tid, frozenset(tps)))
    partitions_added = staticmethod(lambda answer: answer[0])
    end_transaction_request = staticmethod(lambda tid, pid, epoch, commit: ("end", tid, commit))
    transaction_ended = staticmethod(lambda answer: answer[0])
    produce_request = staticmethod(lambda batches, timeout, tid=None: ("produce", tid))
    produced = staticmethod(lambda answer: answer)


class Coordinators:
    """Answers each request from a script: {kind: [answer, ...]} (the last one repeats)."""

    def __init__(self, **script):
        self.script = {kind: list(answers) for kind, answers in script.items()}
        self.asked: list[tuple] = []

    def ask(self, calls, timeout_ms):
        answers = []
        for _node, request in calls:
            self.asked.append(request)
            kind = request[0]
            if kind == "find":
                answers.append((None, 1))
                continue
            queue = self.script.get(kind, [(None,)])
            answers.append(queue.pop(0) if len(queue) > 1 else queue[0])
        return answers

    def leader(self, tp):
        return None  # the copies stay queued: these tests are about the coordinators

    def refresh(self):
        pass

    def of(self, kind: str) -> list[tuple]:
        return [request for request in self.asked if request[0] == kind]


def transactions_with(coordinators: Coordinators, registered: list | None = None) -> Transactions:
    registered = registered if registered is not None else []
    return Transactions(coordinators, Protocol, "replicator-s2t", "source-cluster",
                        ("target", "127.0.0.1:9092"), 1 << 20, 1000, lambda shipment: None,
                        registered.extend)


def taken_over(**script) -> tuple[Transactions, Coordinators]:
    coordinators = Coordinators(init=[(None, 7, 0)], **script)
    owned = transactions_with(coordinators)
    owned.own([SOURCE])
    return owned, coordinators


def test_each_source_partition_has_its_own_transactional_id_registered_as_ours():
    registered = []
    coordinators = Coordinators(init=[(None, 7, 0), (None, 8, 0)])
    transactions_with(coordinators, registered).own([SOURCE, TopicPartition("orders", 4)])
    assert [request[1] for request in coordinators.of("init")] == [
        "kafka-replicator.replicator-s2t.orders.3", "kafka-replicator.replicator-s2t.orders.4"]
    assert registered == [7, 8]


def test_a_first_write_adds_its_target_partition_and_the_map_partition_to_the_transaction():
    owned, coordinators = taken_over()
    owned.submit(Shipment(TARGET, 1, Delivery(1, 0), data=b"x" * 70, origin=SOURCE))
    owned.pump(lambda answer: None)
    assert coordinators.of("add") == [("add", "kafka-replicator.replicator-s2t.orders.3",
                                       frozenset({TARGET, map_topic.PARTITION}))]
    assert owned.open() == [SOURCE]


def test_prepare_writes_the_spans_and_the_next_offset_of_open_transactions_only():
    owned, _ = taken_over()
    owned.submit(Shipment(TARGET, 1, Delivery(1, 0), data=b"x" * 70, origin=SOURCE))
    owned.pump(lambda answer: None)
    journal = Journal("source-cluster")
    journal.record(SOURCE, TARGET, 100, 40, 5)
    journal.record(TopicPartition("orders", 4), TARGET, 7, 9, 1)
    written = []
    owned._writers[SOURCE].producer.submit = written.append
    owned.prepare({SOURCE: 105, TopicPartition("orders", 4): 8}, journal)
    [shipment] = written
    assert shipment.tp == map_topic.PARTITION and shipment.records == 2  # a span and a Position
    assert len(journal.take()) == 1  # partition 4 has no open transaction here


def test_commit_ends_each_open_transaction_and_closes_it():
    owned, coordinators = taken_over()
    owned.submit(Shipment(TARGET, 1, Delivery(1, 0), data=b"x" * 70, origin=SOURCE))
    owned.pump(lambda answer: None)
    assert owned.commit() == [SOURCE]
    assert coordinators.of("end") == [("end", "kafka-replicator.replicator-s2t.orders.3", True)]
    assert owned.open() == []


def test_adding_partitions_waits_for_the_previous_transaction_to_complete():
    owned, coordinators = taken_over(add=[(ConcurrentTransactionsError,), (ConcurrentTransactionsError,), (None,)])
    owned.submit(Shipment(TARGET, 1, Delivery(1, 0), data=b"x" * 70, origin=SOURCE))
    owned.pump(lambda answer: None)
    assert len(coordinators.of("add")) == 3 and owned.open() == [SOURCE]


def test_a_commit_refused_because_another_member_took_the_partition_over_raises_fenced():
    owned, _ = taken_over(end=[(ProducerFencedError,)])
    owned.submit(Shipment(TARGET, 1, Delivery(1, 0), data=b"x" * 70, origin=SOURCE))
    owned.pump(lambda answer: None)
    with pytest.raises(Fenced, match="kafka-replicator.replicator-s2t.orders.3"):
        owned.commit()


def test_a_refused_transactional_id_names_the_cluster_and_what_to_grant():
    coordinators = Coordinators(init=[(TransactionalIdAuthorizationFailedError, -1, -1)])
    with pytest.raises(ClusterError) as refused:
        transactions_with(coordinators).check()
    message = str(refused.value)
    assert message.startswith("target cluster (127.0.0.1:9092): exactlyOnce:")
    assert "--transactional-id kafka-replicator.replicator-s2t. --resource-pattern-type prefixed" in message


def test_a_target_without_a_transaction_coordinator_says_what_the_brokers_need(monkeypatch):
    monkeypatch.setattr(transactions, "CALL_TIMEOUT_SECONDS", 0.05)
    coordinators = Coordinators(init=[(CoordinatorNotAvailableError, -1, -1)])
    with pytest.raises(ClusterError, match="__transaction_state"):
        transactions_with(coordinators).check()


def test_a_position_and_a_span_are_told_apart_in_the_map_topic():
    position = Position("group", "cluster", Partition("orders", 3), 105)
    key, value = position.encode()
    assert Position.decode(key, value) == position
    journal = Journal("cluster")
    journal.record(SOURCE, TARGET, 100, 40, 5)
    [entry] = journal.take()
    assert Entry.decode(key, value) is None
    assert Position.decode(*entry.encode()) is None


def test_the_source_group_gets_no_position_of_a_partition_released_or_still_in_a_transaction():
    owned, _ = taken_over()
    other = TopicPartition("orders", 4)
    owned.own([other])
    owned.submit(Shipment(TARGET, 1, Delivery(1, 0), data=b"x" * 70, origin=SOURCE))
    owned.pump(lambda answer: None)
    assert owned.committed({SOURCE: 105, other: 9}) == {other: 9}  # SOURCE's is not committed yet
    owned.release([SOURCE])
    assert owned.committed({SOURCE: 105, other: 9}) == {other: 9}  # and its copies were aborted
