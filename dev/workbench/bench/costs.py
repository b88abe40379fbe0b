"""CPU per record and per batch of our data path, with a kafka-python relay for reference.

Measured in this process with time.process_time() (all threads: the network client's IO
thread counts too), on the data set topic's batches as stored; each figure is the median
of REPEATS runs. The steps, as the Flow takes them:

- fetch: FetchRequests to the partitions' leaders, answers read and batches.split (the Fetcher);
- plan: Shipper.plan in batch mode (what each fetched batch becomes; small batches are
  merged in it);
- rewrite: each planned shipment's writer fields and CRC-32C (a copied batch's header
  rewritten, a merged one stamped);
- request: wire.produce_request with the next shipment of each partition, as the producer
  groups them, serialized as kafka-python's connection does;
- merge: batches.merge and batches.stamp alone, the part of plan + rewrite that merges
  small batches (records copied as bytes, only their lengths and deltas written again);
- merge + provenance: the same merge with provenance headers appended to each record's
  bytes (`Provenance.forward_fields`), record mode's path;
- re-encode: batches.records, batches.encode and batches.stamp (a fallback: a key-hashed
  target, v0/v1 batches).

Batch mode costs fetch + plan + rewrite + request a record, record mode fetch + merge with
provenance + request. The reference: a kafka-python consumer decoding the
same records and a producer encoding them (the existing chart's relay, `relay.py`).
"""

from __future__ import annotations

import queue
import statistics
import time
import uuid
from collections import Counter, deque

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from replicator import assembly, batches, wire
from replicator.config import ConsumerConfig, ProducerConfig
from replicator.provenance import Provenance
from replicator.shipping import Shipper, Target
from . import data

REPEATS = 3
PRODUCER_ID, EPOCH = 1000, 0  # any writer fields: the rewrite costs the same
PRODUCE_VERSION = 9  # the highest of wire.produce_request's: what Kafka 4 brokers negotiate
CONSUMER, PRODUCER = ConsumerConfig(), ProducerConfig()  # our defaults, as the Flow uses them

NOTE = ("record mode's planning is its merge with provenance; its requests are taken to cost what batch "
        "mode's do. Sending and answers of produce requests are not measured.")


def _median_cpu(run, *args):
    """The median CPU seconds of REPEATS calls of run(*args), and the last call's result."""
    seconds = []
    for _ in range(REPEATS):
        start = time.process_time()
        result = run(*args)
        seconds.append(time.process_time() - start)
    return statistics.median(seconds), result


# Our data path -------------------------------------------------------------------------

def _fetch(link: wire.Wire, topic: str, limit: int) -> dict[TopicPartition, list[batches.Batch]]:
    """Each partition's batches from its start, in whole fetches until `limit` records."""
    positions = {TopicPartition(topic, p): 0 for p in range(data.PARTITIONS)}
    found: dict[TopicPartition, list[batches.Batch]] = {tp: [] for tp in positions}
    answers: queue.Queue = queue.Queue()
    count = 0
    while positions and count < limit:
        by_node: dict[int, dict] = {}
        for tp, offset in positions.items():
            by_node.setdefault(link.leader(tp), {})[tp] = offset
        for node, offsets in by_node.items():
            request = wire.fetch_request(offsets, CONSUMER.max_partition_fetch_bytes,
                                         CONSUMER.fetch_max_bytes, assembly.FETCH_WAIT_MS)
            link.send(node, request).add_both(answers.put)
        for _ in by_node:
            answer = answers.get(timeout=60)
            if isinstance(answer, BaseException):
                raise answer
            for part in wire.fetched(answer):
                if part.error is not None:
                    raise part.error()
                split = batches.split(part.records)
                if split:
                    found[part.tp] += split
                    positions[part.tp] = split[-1].next_offset
                    count += sum(batch.record_count for batch in split)
                if not split or positions[part.tp] >= part.high_watermark:
                    del positions[part.tp]
    return found


def _plan(fetched: dict) -> dict[TopicPartition, list]:
    """The batch-mode planner's steps for each partition's batches (merges included)."""
    shipper = Shipper("batch", PRODUCER.compression_type, PRODUCER.batch_size,
                      PRODUCER.max_request_size - 512,  # as the Flow: room for the request's fields
                      assembly.MERGE_BELOW_BYTES, is_ours=lambda producer_id: False,
                      provenance=Provenance("a", "b"), on_fallback=lambda *args: None)
    return {tp: shipper.plan(tp, Target(tp.topic, data.PARTITIONS, tp.partition), 0, found, [])
            for tp, found in fetched.items()}


def _rewrite(planned: dict) -> dict[TopicPartition, list[bytes]]:
    """Each shipment as the producer sends it: a copy rewritten, a merged batch stamped."""
    return {tp: [shipment.stamped(PRODUCER_ID, EPOCH, False) for step in steps for shipment in step.shipments]
            for tp, steps in planned.items()}


def _requests(rewritten: dict[TopicPartition, list[bytes]]) -> int:
    """Serialize the produce requests the producer would send; return how many.

    As BatchProducer._send_one: at most one batch per partition in a request, and no more
    than max_request_size (but always one batch).
    """
    lanes = {tp: deque(found) for tp, found in rewritten.items()}
    sent = 0
    while any(lanes.values()):
        chosen: dict[TopicPartition, bytes] = {}
        size = 0
        for tp, lane in lanes.items():
            if lane and (not chosen or size + len(lane[0]) <= PRODUCER.max_request_size):
                chosen[tp] = lane.popleft()
                size += len(chosen[tp])
        request = wire.produce_request(chosen, 30_000)
        request.with_header(correlation_id=sent, client_id="bench")  # as kafka-python's parser
        request.encode(version=PRODUCE_VERSION, framed=True, header=True)
        sent += 1
    return sent


def _merge(fetched: dict, provenance: Provenance | None) -> None:
    rewrite = None if provenance is None else provenance.forward_fields
    for found in fetched.values():
        for merged in batches.merge(found, 0, PRODUCER.compression_type, PRODUCER.batch_size, rewrite):
            batches.stamp(merged.data, PRODUCER_ID, EPOCH, 0)


def _reencode(fetched: dict) -> None:
    """Decode each batch's records and encode them into a new batch, as a fallback does."""
    for found in fetched.values():
        for batch in found:
            batches.stamp(batches.encode(batches.records(batch), PRODUCER.compression_type), PRODUCER_ID, EPOCH, 0)


def _ours(bootstrap: str, topic: str, limit: int) -> dict:
    """Each step's CPU per batch and per record on `topic`, and what each mode's path sums to."""
    link = wire.Wire({"bootstrap_servers": [bootstrap]},
                     CONSUMER.fetch_max_bytes + CONSUMER.max_partition_fetch_bytes + 65536)
    try:
        link.bootstrap(assembly.CONNECT_TIMEOUT_MS)
        link.track([topic])
        tps = [TopicPartition(topic, p) for p in range(data.PARTITIONS)]
        deadline = time.monotonic() + 30
        while any(link.leader(tp) is None for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leaders for {topic}")
            time.sleep(0.1)
        cpu = {}
        cpu["fetch"], fetched = _median_cpu(_fetch, link, topic, limit)
    finally:
        link.close()
    cpu["plan"], planned = _median_cpu(_plan, fetched)
    kinds = Counter(step.how for steps in planned.values() for step in steps)
    cpu["rewrite"], rewritten = _median_cpu(_rewrite, planned)
    cpu["request"], requests = _median_cpu(_requests, rewritten)
    cpu["merge"], _ = _median_cpu(_merge, fetched, None)
    cpu["merge + provenance"], _ = _median_cpu(_merge, fetched, Provenance("a", "b"))
    cpu["re-encode"], _ = _median_cpu(_reencode, fetched)

    every = [batch for found in fetched.values() for batch in found]
    records = sum(batch.record_count for batch in every)
    if not records:
        return {"records": 0}
    us_per_record = {step: seconds * 1e6 / records for step, seconds in cpu.items()}
    batch_mode = sum(us_per_record[step] for step in ("fetch", "plan", "rewrite", "request"))
    record_mode = sum(us_per_record[step] for step in ("fetch", "merge + provenance", "request"))
    return {
        "records": records,
        "runs": REPEATS,
        "batches": len(every),
        "requests": requests,
        "planned": dict(kinds),
        "batch_records": records / len(every),
        "batch_bytes": sum(batch.size for batch in every) / len(every),
        "us_per_batch": {step: seconds * 1e6 / len(every) for step, seconds in cpu.items()},
        "us_per_record": us_per_record,
        "batch_mode_us": batch_mode,
        "batch_mode_records_per_cpu_second": 1e6 / batch_mode,
        "record_mode_us": record_mode,
        "record_mode_records_per_cpu_second": 1e6 / record_mode,
    }


# A kafka-python relay ------------------------------------------------------------------

def _decode(consumer: KafkaConsumer, tps: list[TopicPartition], limit: int) -> tuple[list[dict], int]:
    """A kafka-python consumer polling `limit` records from the start: what poll() costs."""
    consumer.seek_to_beginning(*tps)
    polls: list[dict] = []
    count = 0
    deadline = time.monotonic() + 120
    while count < limit and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500, max_records=2000)
        polls.append(polled)
        count += sum(len(records) for records in polled.values())
    return polls, count


def _encode(producer: KafkaProducer, topic: str, polls: list[dict]) -> None:
    """A kafka-python producer sending the records and flushing: what send() and its I/O thread cost."""
    send = producer.send
    for polled in polls:
        for tp, records in polled.items():
            for r in records:
                send(topic, r.value, r.key, r.headers, tp.partition, r.timestamp)
    producer.flush(timeout=120)


def _relay(bootstrap: str, topic: str, limit: int) -> dict:
    # Clients are made outside the measurements: a relay makes them once.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed", max_partition_fetch_bytes=1 << 20)
    tps = [TopicPartition(topic, p) for p in range(data.PARTITIONS)]
    consumer.assign(tps)
    try:
        decode_cpu, (polls, count) = _median_cpu(_decode, consumer, tps, limit)
    finally:
        consumer.close()
    if not count:
        return {"records": 0}
    target = f"bench.costs.{uuid.uuid4().hex[:6]}"
    data.create_topic(bootstrap, target)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_in_flight_requests_per_connection=1,
                             linger_ms=PRODUCER.linger_ms, batch_size=PRODUCER.batch_size,
                             max_request_size=PRODUCER.max_request_size)
    try:
        encode_cpu, _ = _median_cpu(_encode, producer, target, polls)
    finally:
        producer.close(timeout=10)
        data.delete_topics(bootstrap, [target])
    decode_us, encode_us = decode_cpu * 1e6 / count, encode_cpu * 1e6 / count
    return {"records": count, "decode_us": decode_us, "encode_us": encode_us,
            "relay_us": decode_us + encode_us, "records_per_cpu_second": 1e6 / (decode_us + encode_us)}


def measure(bootstrap: str, topic: str, limit: int = 100_000) -> dict:
    """CPU per record and per batch of our data path's steps on `topic`, and of a kafka-python relay."""
    result = _ours(bootstrap, topic, limit)
    result["kafka_python"] = _relay(bootstrap, topic, limit)
    result["note"] = NOTE
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100_000),
                     indent=1))
