"""The plan: which group members and direction controllers to run, and what each one
reserves in Ray.

Pure: config in, a list of members out. No Ray here, so it is tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from replicator.config import ReplicatorConfig
from replicator.quantity import cpus, memory_bytes

NAMESPACE = "kafka-replicator"  # the Ray namespace of the members' actors
DEFAULT_CPUS = 0.5
# A controller wakes every few seconds for a few admin requests: it reserves no CPU, so that
# it fits on any worker, whose CPUs are sized for its members (the chart's raycluster.yaml).
CONTROLLER_CPUS = 0.0
# The chart's worker pods advertise one `kafka-replicator-<direction>` per direction they
# host members of, the head none: a sliver of it keeps a controller on a worker of its
# direction, off the head (whose Ray has no CPUs: a 0-CPU actor could land there).
CONTROLLER_PIN_SHARE = 0.01


@dataclass(frozen=True)
class MemberPlan:
    """One consumer-group member: one Ray actor."""

    direction: str
    index: int
    num_cpus: float
    memory: int | None  # bytes; None reserves no memory in Ray

    @property
    def name(self) -> str:
        """The actor's name and the member's group.instance.id, e.g. sourceToTarget-0."""
        return f"{self.direction}-{self.index}"


def plan(config: ReplicatorConfig) -> list[MemberPlan]:
    """Every member of every enabled direction, in direction then index order."""
    requests = config.resources.requests
    num_cpus = DEFAULT_CPUS if requests.cpu is None else cpus(requests.cpu)
    memory = None if requests.memory is None else memory_bytes(requests.memory)
    return [
        MemberPlan(direction, index, num_cpus, memory)
        for direction in config.enabled_directions()
        for index in range(config.members(direction))
    ]


@dataclass(frozen=True)
class ControllerPlan:
    """One direction's controller: one Ray actor."""

    direction: str
    num_cpus: float = CONTROLLER_CPUS

    @property
    def name(self) -> str:
        """The actor's name, e.g. controller-sourceToTarget."""
        return controller_name(self.direction)

    @property
    def pin(self) -> str:
        """The Ray resource of the nodes meant for this direction's actors, where there is one."""
        return f"kafka-replicator-{self.direction}"


def controller_name(direction: str) -> str:
    return f"controller-{direction}"


def controllers(config: ReplicatorConfig) -> list[ControllerPlan]:
    """A controller for each enabled direction."""
    return [ControllerPlan(direction) for direction in config.enabled_directions()]
