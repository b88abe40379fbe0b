"""`replicate --metrics-port`: the member's metrics, liveness and readiness on one port.

Metrics are exported when scraped, so that a scrape sees the counts of that moment; a flow
that Restarts replaced has its last counts exported before the new one's. The direction's
backlog is measured on a thread of its own (replicator.backlog), every MEASURE_SECONDS: each
member that serves metrics exports it, so alerts take the max over members.
"""

from __future__ import annotations

import threading
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST

from .endpoint import Endpoint, Exposition
from .backlog import Backlog, BacklogFigures, Measuring
from .export import BacklogExporter, Exporter
from .flow import Flow
from .group_sync import GroupSync
from .health import not_alive, not_ready
from .prometheus import PrometheusMetrics
from .restarts import Restarts


class MemberProbes:
    """Serves one `replicate` member until close()."""

    def __init__(self, flows: Restarts, direction: str, member: str | None, host: str, port: int,
                 group_sync: GroupSync | None = None, backlog: Callable[[], Backlog] | None = None):
        """`group_sync`: the group offset sync of the controller beside the member, if it runs
        one. `backlog` opens the direction's Backlog, to measure it; None: not measured."""
        self._flows = flows
        self._group_sync = group_sync
        self._lock = threading.Lock()  # scrapes (several threads at once) and backlog measures
        self._metrics = PrometheusMetrics()
        self._exporter = Exporter(self._metrics, direction, member or "-")
        self._backlog_exporter = BacklogExporter(self._metrics, direction)
        self._flow: Flow | None = None
        self.endpoint = Endpoint(host, port, self._not_alive, self._not_ready,
                                 Exposition(CONTENT_TYPE_LATEST, self._scrape))
        self._measuring = None if backlog is None else Measuring(backlog, self._measured)

    def close(self) -> None:
        self.endpoint.close()
        if self._measuring is not None:
            self._measuring.close()

    def _measured(self, figures: BacklogFigures) -> None:
        with self._lock:
            self._backlog_exporter.publish(figures)

    def _not_alive(self) -> list[str]:
        return not_alive(self._flows.flow.health())

    def _not_ready(self) -> list[str]:
        return not_ready(self._flows.flow.health())

    def _scrape(self) -> bytes:
        with self._lock:
            flow = self._flows.flow
            if flow is not self._flow:
                if self._flow is not None:
                    self._publish(self._flow)  # the replaced flow's last counts
                    self._exporter.new_flow()
                self._flow = flow
            self._publish(flow)
            if self._group_sync is not None:
                self._exporter.publish_sync(self._group_sync.figures)
            return self._metrics.exposition()

    def _publish(self, flow: Flow) -> None:
        health = flow.health()
        self._exporter.publish(flow.metrics.snapshot(), flow.metrics.drain_latencies(),
                               len(health.assigned), list(health.stopped))
