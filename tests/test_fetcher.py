"""The fetcher's positions: one fetch per broker, stale answers ignored, fair partition order."""

from __future__ import annotations

from kafka.structs import TopicPartition

from replicator.fetcher import Fetcher
from replicator.wire import FetchedPartition

A = TopicPartition("t", 0)
B = TopicPartition("t", 1)


class Sent:
    def __init__(self, offsets):
        self.offsets = offsets
        self.callbacks = []

    def add_both(self, callback):
        self.callbacks.append(callback)


class FakeWire:
    def __init__(self):
        self.sent: list[Sent] = []

    def leader(self, tp):
        return "node-1"

    def metadata_stamp(self):
        return 1

    def refresh(self):
        pass

    def send(self, node, request):
        self.sent.append(Sent(request))
        return self.sent[-1]


class Protocol:
    @staticmethod
    def fetch_request(offsets, partition_max_bytes, max_bytes, max_wait_ms, **session):
        return dict(offsets)

    @staticmethod
    def fetch_session(answer):
        return None, 0  # the broker keeps no session: every fetch is a full one

    @staticmethod
    def fetched(answer):
        return answer


def fetcher():
    wire = FakeWire()
    return Fetcher(wire, Protocol, 1 << 20, 50 << 20, 100), wire


def test_one_fetch_is_in_flight_per_broker():
    f, wire = fetcher()
    f.assign(A, 0)
    f.assign(B, 5)
    sent = []
    f.pump(sent.append)
    f.pump(sent.append)
    assert len(wire.sent) == 1 and wire.sent[0].offsets.keys() == {A, B}


def test_an_answer_to_a_fetch_sent_before_a_seek_is_ignored():
    f, wire = fetcher()
    f.assign(A, 0)
    events = []
    f.pump(events.append)
    f.seek(A, 40)
    wire.sent[0].callbacks[0]("answer")  # the IO thread hands the answer over
    [event] = events
    assert f.answered(event.node, event.sent, [FetchedPartition(A, None, 100, b"x", [])]) == []
    assert f.position(A) == 40


def test_a_paused_partition_is_not_fetched_and_its_answer_in_flight_is_ignored():
    f, wire = fetcher()
    f.assign(A, 0)
    f.assign(B, 0)
    events = []
    f.pump(events.append)
    f.pump(lambda event: None)
    f.pause(A)
    wire.sent[0].callbacks[0]("answer")
    event = events[0]
    parts = [FetchedPartition(tp, None, 100, b"x", []) for tp in (A, B)]
    assert [part.tp for part in f.answered(event.node, event.sent, parts)] == [B]
    f.pump(lambda event: None)
    assert list(wire.sent[-1].offsets) == [B]


def test_the_partition_order_rotates_between_fetches():
    f, wire = fetcher()
    f.assign(A, 0)
    f.assign(B, 0)
    firsts = []
    for _ in range(2):
        events = []
        f.pump(events.append)
        wire.sent[-1].callbacks[0]("answer")
        f.answered(events[0].node, events[0].sent, [])
        firsts.append(next(iter(wire.sent[-1].offsets)))
    assert firsts[0] != firsts[1]


class InSession(Protocol):
    """A broker that keeps fetch sessions: every answer continues session 7."""

    @staticmethod
    def fetch_request(offsets, partition_max_bytes, max_bytes, max_wait_ms, **session):
        return {"offsets": dict(offsets), **session}

    @staticmethod
    def fetch_session(answer):
        return None, 7


def in_session():
    wire = FakeWire()
    f = Fetcher(wire, InSession, 1 << 20, 50 << 20, 100)
    f.assign(A, 0)
    f.assign(B, 0)
    return f, wire


def answer_last(f, wire, events, parts=()):
    wire.sent[-1].callbacks[0]("answer")
    return f.answered(events[-1].node, events[-1].sent, list(parts))


def test_in_a_session_a_fetch_lists_only_the_partitions_whose_position_moved():
    f, wire = in_session()
    events = []
    f.pump(events.append)
    answer_last(f, wire, events, [FetchedPartition(A, None, 100, b"x", [])])
    f.advance(A, 10)
    f.pump(events.append)
    assert wire.sent[-1].offsets["offsets"] == {A: 10}
    assert (wire.sent[-1].offsets["session_id"], wire.sent[-1].offsets["session_epoch"]) == (7, 1)


def test_a_partition_paused_while_a_full_fetch_is_in_flight_is_forgotten_by_the_session_it_opens():
    f, wire = in_session()
    events = []
    f.pump(events.append)
    f.pause(A)
    assert [part.tp for part in answer_last(f, wire, events, [
        FetchedPartition(tp, None, 100, b"x", []) for tp in (A, B)])] == [B]
    f.pump(events.append)
    assert wire.sent[-1].offsets["forgotten"] == [A]


def test_a_failed_fetch_is_followed_by_a_full_one():
    f, wire = in_session()
    events = []
    f.pump(events.append)
    answer_last(f, wire, events)
    f.pump(events.append)
    wire.sent[-1].callbacks[0](ConnectionError("lost"))
    f.answered(events[-1].node, events[-1].sent, ConnectionError("lost"))
    f.pump(events.append)
    assert wire.sent[-1].offsets["offsets"].keys() == {A, B}
    assert wire.sent[-1].offsets["session_epoch"] == 0


class Waits(InSession):
    """Records what each fetch asks the broker to wait for."""

    @staticmethod
    def fetch_request(offsets, partition_max_bytes, max_bytes, max_wait_ms, min_bytes=1, **session):
        return {"offsets": dict(offsets), "wait": (min_bytes, max_wait_ms), **session}


def waiting_fetcher():
    wire = FakeWire()
    f = Fetcher(wire, Waits, 1 << 20, 50 << 20, 100, min_bytes=65536, flowing_wait_ms=10)
    f.assign(A, 0)
    return f, wire


def test_a_fetch_from_a_quiet_broker_returns_at_its_first_record():
    f, wire = waiting_fetcher()
    events = []
    f.pump(events.append)
    assert wire.sent[-1].offsets["wait"] == (1, 100)


def fetched_records(f, wire, events):
    """A fetch whose answer brings a record, then the next fetch."""
    f.pump(events.append)
    answer_last(f, wire, events, [FetchedPartition(A, None, 100, b"x", [])])
    f.advance(A, 1)
    f.pump(events.append)


def test_while_records_flow_a_fetch_waits_for_more_of_them():
    f, wire = waiting_fetcher()
    fetched_records(f, wire, [])
    assert wire.sent[-1].offsets["wait"] == (65536, 10)


def test_an_empty_answer_ends_the_wait_for_more():
    f, wire = waiting_fetcher()
    events = []
    fetched_records(f, wire, events)
    answer_last(f, wire, events, [FetchedPartition(A, None, 100, b"", [])])
    f.pump(events.append)
    assert wire.sent[-1].offsets["wait"] == (1, 100)
