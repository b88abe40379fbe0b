"""Fetch sessions (KIP-227) with a real source broker: an idle member's fetches name no
partition, and a session the broker no longer knows is replaced without losing a record."""

from __future__ import annotations

import threading
import time

import pytest

from kafka_support import committed, count, create_topic, flow_for, produce, read_all, running, wait_until
from replicator import wire

pytestmark = pytest.mark.kafka

PARTITIONS = 12
UNKNOWN_SESSION = 0x7FFFFFF0  # an id no broker of the sandbox gave


class Fetches:
    """Every fetch the flow sends (how many partitions it lists, its session epoch) and every
    error a broker refused one with; `forget()` makes the next incremental fetch name a
    session the broker does not know, as after the broker evicted it."""

    def __init__(self, monkeypatch):
        self.sent: list[tuple[int, int]] = []
        self.refusals: list[type] = []
        self._forget = threading.Event()
        request, answer = wire.fetch_request, wire.fetch_session

        def fetch_request(offsets, *args, **session):
            epoch = session.get("session_epoch", -1)
            if epoch > 0 and self._forget.is_set():
                self._forget.clear()
                session["session_id"] = UNKNOWN_SESSION
            self.sent.append((len(offsets), epoch))
            return request(offsets, *args, **session)

        def fetch_session(response):
            error, session_id = answer(response)
            if error is not None:
                self.refusals.append(error)
            return error, session_id

        monkeypatch.setattr(wire, "fetch_request", fetch_request)
        monkeypatch.setattr(wire, "fetch_session", fetch_session)

    def forget(self) -> None:
        self._forget.set()


def records(start: int, end: int) -> list:
    return [(i % PARTITIONS, f"k{i:06d}".encode(), b"v", [], None) for i in range(start, end)]


def keys(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    return {p: [r.key for r in rs] for p, rs in read_all(bootstrap, topic).items()}


def copying(sandbox, name):
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    return flow_for(sandbox, consumerGroup={"sourceToTarget": name},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})


def test_an_idle_members_fetches_name_no_partition_once_its_session_holds_them(sandbox, name, monkeypatch):
    fetches = Fetches(monkeypatch)
    flow = copying(sandbox, name)
    produce(sandbox.source, name, records(0, 120))
    with running(flow):
        wait_until(lambda: count(sandbox.target, name) >= 120, what="the records on the target")
        time.sleep(1.0)  # the fetches that moved the positions are answered
        idle_from = len(fetches.sent)
        time.sleep(2.0)
        idle = fetches.sent[idle_from:]
    assert fetches.sent[0][1] == 0  # the first fetch is a full one, which opens the session
    assert len(idle) >= 5 and all(listed == 0 and epoch > 0 for listed, epoch in idle), idle


def test_a_session_the_broker_does_not_know_is_replaced_and_every_record_is_copied_once(
        sandbox, name, monkeypatch):
    fetches = Fetches(monkeypatch)
    flow = copying(sandbox, name)
    produce(sandbox.source, name, records(0, 600))
    with running(flow):
        wait_until(lambda: count(sandbox.target, name) >= 600, what="the first records on the target")
        fetches.forget()
        wait_until(lambda: fetches.refusals, what="the broker to refuse the unknown session")
        produce(sandbox.source, name, records(600, 1200))
        wait_until(lambda: count(sandbox.target, name) >= 1200, what="the later records on the target")
        wait_until(lambda: sum(committed(sandbox.source, name).values()) == 1200,
                   what="the group to commit everything")
    assert fetches.refusals[0].__name__ == "FetchSessionIdNotFoundError"
    assert keys(sandbox.target, name) == keys(sandbox.source, name)
