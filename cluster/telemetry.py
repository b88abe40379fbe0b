"""A member's figures as Ray metrics: on the Ray dashboard and its Prometheus endpoint.

The series and what feeds them are replicator/export.py's; Ray names them
ray_kafka_replicator_* in Prometheus.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

from replicator.export import LATENCY_BOUNDARIES_MS, Exporter, Series, Totals

__all__ = ["Exporter", "RayMetrics", "Totals", "exporter"]


class RayMetrics:
    """replicator.export's backend on ray.util.metrics, whose methods take tags as it expects."""

    def metric(self, series: Series):
        if series.kind == "counter":
            return Counter(series.name, series.help, series.labels)
        if series.kind == "gauge":
            return Gauge(series.name, series.help, series.labels)
        return Histogram(series.name, series.help, LATENCY_BOUNDARIES_MS, series.labels)


def exporter(direction: str, member: str) -> Exporter:
    return Exporter(RayMetrics(), direction, member)
