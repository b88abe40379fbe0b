"""A bare kafka-python relay: poll, send, nothing else (no checkpoint, no provenance,
no commits). Used to tell kafka-python's own latency from our loop's.

``python -m workbench.bench.relay SOURCE TARGET GROUP SRC=DST [SRC=DST ...]``; stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys

from kafka import KafkaConsumer, KafkaProducer

from replicator.config import ProducerConfig


def relay(source: str, target: str, group: str, routes: dict[str, str]) -> None:
    settings = ProducerConfig()  # our producer's defaults
    consumer = KafkaConsumer(*routes, bootstrap_servers=source, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", isolation_level="read_committed")
    producer = KafkaProducer(bootstrap_servers=target, acks="all", max_in_flight_requests_per_connection=1,
                             linger_ms=settings.linger_ms, batch_size=settings.batch_size)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        while not stopping:
            for tp, batch in consumer.poll(timeout_ms=1000, max_records=500).items():
                topic = routes[tp.topic]
                for r in batch:
                    producer.send(topic, r.value, r.key, r.headers, tp.partition, r.timestamp)
    finally:
        producer.close(timeout=10)
        consumer.close()


if __name__ == "__main__":
    src, tgt, grp, *pairs = sys.argv[1:]
    relay(src, tgt, grp, dict(pair.split("=", 1) for pair in pairs))
