"""`replicate --metrics-port`: the member's metrics, liveness and readiness on one port.

Metrics are exported when scraped, so that a scrape sees the counts of that moment; a flow
that Restarts replaced has its last counts exported before the new one's. The direction's
backlog and group offset sync are the controller's beside the member (replicator.controller):
each `replicate` that serves metrics exports them, so alerts take the max over members.
"""

from __future__ import annotations

import threading

from prometheus_client import CONTENT_TYPE_LATEST

from .controller import Controller
from .endpoint import Endpoint, Exposition
from .export import BacklogExporter, Exporter
from .flow import Flow
from .health import not_alive, not_ready
from .prometheus import PrometheusMetrics
from .restarts import Restarts


class MemberProbes:
    """Serves one `replicate` member until close()."""

    def __init__(self, flows: Restarts, controller: Controller, direction: str, member: str | None,
                 host: str, port: int):
        self._flows = flows
        self._controller = controller
        self._lock = threading.Lock()  # scrapes come on several threads at once
        self._metrics = PrometheusMetrics()
        self._exporter = Exporter(self._metrics, direction, member or "-")
        self._backlog_exporter = BacklogExporter(self._metrics, direction)
        self._exported_backlog = None
        self._flow: Flow | None = None
        self.endpoint = Endpoint(host, port, self._not_alive, self._not_ready,
                                 Exposition(CONTENT_TYPE_LATEST, self._scrape))

    def close(self) -> None:
        self.endpoint.close()

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
            group_sync, backlog = self._controller.group_sync, self._controller.backlog
            if group_sync is not None:
                self._exporter.publish_sync(group_sync.figures)
            if backlog is not None and backlog is not self._exported_backlog:
                self._backlog_exporter.publish(backlog)
                self._exported_backlog = backlog
            return self._metrics.exposition()

    def _publish(self, flow: Flow) -> None:
        health = flow.health()
        self._exporter.publish(flow.metrics.snapshot(), flow.metrics.drain_latencies(),
                               len(health.assigned), list(health.stopped))
