"""`verify --every`: a pass every few seconds, its mismatches a gauge on a metrics port."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST

from .config import ReplicatorConfig
from .endpoint import Endpoint, Exposition
from .export import VERIFY_MISMATCHES
from .prometheus import PrometheusMetrics
from .verification import PartitionVerdict, Verifier

log = logging.getLogger(__name__)


class Watch:
    """Verifies until stop(); serves kafka_replicator_verify_mismatches when given a port."""

    def __init__(self, config: ReplicatorConfig, directions: list[str], topics: list[str] | None,
                 every: float, show: Callable[[list[PartitionVerdict], float], None],
                 host: str = "127.0.0.1", port: int | None = None):
        self._config = config
        self._directions = directions
        self._topics = topics
        self._every = every
        self._show = show
        self._stopping = threading.Event()
        self._metrics = PrometheusMetrics()
        self._mismatches = self._metrics.metric(VERIFY_MISMATCHES)
        self._failure: str | None = "no pass has finished yet"
        self.passes = 0
        self.endpoint = None
        if port is not None:
            self.endpoint = Endpoint(host, port, lambda: [], self._not_ready,
                                     Exposition(CONTENT_TYPE_LATEST, self._metrics.exposition))

    def _not_ready(self) -> list[str]:
        return [self._failure] if self._failure else []

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        verifiers: dict[str, Verifier] = {}
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    verdicts = []
                    for direction in self._directions:
                        if direction not in verifiers:
                            verifiers[direction] = Verifier(self._config, direction, self._topics)
                        verdicts.extend(verifiers[direction].verify())
                except Exception as exc:  # a pass that failed is said, and the next one tried
                    self._failure = f"the last pass failed: {exc}"
                    log.error("verify: %s", self._failure)
                    for verifier in verifiers.values():
                        verifier.close()
                    verifiers.clear()
                else:
                    self._publish(verdicts)
                    self._failure = None
                    self.passes += 1
                    self._show(verdicts, time.monotonic() - started)
                self._stopping.wait(max(0.0, self._every - (time.monotonic() - started)))
        finally:
            for verifier in verifiers.values():
                verifier.close()
            if self.endpoint is not None:
                self.endpoint.close()

    def _publish(self, verdicts: list[PartitionVerdict]) -> None:
        for verdict in verdicts:
            self._mismatches.set(verdict.mismatches, {"direction": verdict.direction, "topic": verdict.topic,
                                                      "partition": str(verdict.partition)})
