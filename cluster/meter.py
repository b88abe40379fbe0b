"""One Ray actor per direction that measures its backlog (replicator.backlog) and exports it
as Ray metrics (ray_kafka_replicator_committed_lag, _lag_seconds, _partitions_ownerless).

An actor, not the driver itself: the driver usually joins with Ray Client, from a pod of its
own, whose metrics reach no Ray metrics agent; an actor's reach Prometheus as the members'
do. The driver starts the meters with the members and stops them with them.
"""

from __future__ import annotations

import ray

from replicator.backlog import Backlog, Measuring
from replicator.config import ReplicatorConfig
from replicator.export import BacklogExporter

from .telemetry import RayMetrics
from .worker import log_to_stderr


@ray.remote(num_cpus=0, max_restarts=-1)
class Meter:
    """Measures one direction's backlog every few seconds until stopped."""

    def __init__(self, config: ReplicatorConfig, direction: str, log_level: str = "INFO",
                 log_format: str = "text"):
        log_to_stderr(log_level, log_format)
        self._direction = direction
        exporter = BacklogExporter(RayMetrics(), direction)
        self._measuring = Measuring(lambda: Backlog(config, direction), exporter.publish)

    def __repr__(self) -> str:
        # Ray prefixes the actor's log lines with this: "(sourceToTarget-meter pid=...)".
        return f"{self._direction}-meter"

    def measuring(self) -> bool:
        """Whether it is measuring (a call that returns once the actor has started)."""
        return self._measuring.alive


def start_meters(config: ReplicatorConfig, log_level: str, log_format: str) -> list[ray.actor.ActorHandle]:
    """One per enabled direction, owned by the driver (they go when it goes)."""
    return [Meter.remote(config, direction, log_level, log_format)
            for direction in config.enabled_directions()]


def stop_meters(meters: list[ray.actor.ActorHandle]) -> None:
    """Kill them: they hold nothing that needs a graceful stop."""
    for meter in meters:
        ray.kill(meter, no_restart=True)
