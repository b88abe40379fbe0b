"""replicator/export.py's series on `prometheus_client`, for `replicate --metrics-port`: the
series Ray exports as ray_kafka_replicator_*, here as kafka_replicator_*."""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry

from .export import LATENCY_BOUNDARIES_MS, Series


class _Labelled:
    """A prometheus_client metric called as Ray's are: value first, then the tags."""

    def __init__(self, metric):
        self._metric = metric

    def inc(self, value: float, tags: dict[str, str]) -> None:
        self._metric.labels(**tags).inc(value)

    def set(self, value: float, tags: dict[str, str]) -> None:
        self._metric.labels(**tags).set(value)

    def observe(self, value: float, tags: dict[str, str]) -> None:
        self._metric.labels(**tags).observe(value)


class PrometheusMetrics:
    """A backend with a registry of its own, so that two in one process do not collide."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)

    def metric(self, series: Series) -> _Labelled:
        common = dict(name=series.name, documentation=series.help, labelnames=series.labels,
                      registry=self.registry)
        if series.kind == "counter":
            return _Labelled(prometheus_client.Counter(**common))
        if series.kind == "gauge":
            return _Labelled(prometheus_client.Gauge(**common))
        return _Labelled(prometheus_client.Histogram(**common, buckets=LATENCY_BOUNDARIES_MS))

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return prometheus_client.generate_latest(self.registry)
