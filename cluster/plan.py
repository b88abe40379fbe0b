"""The plan: which group members to run, and what each one reserves in Ray.

Pure: config in, a list of members out. No Ray here, so it is tested on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from replicator.config import ReplicatorConfig
from replicator.errors import ConfigError

NAMESPACE = "kafka-replicator"  # the Ray namespace of the members' actors
DEFAULT_CPUS = 0.5

# Kubernetes quantity suffixes (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/).
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?([A-Za-z]{0,2})$")


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


def cpus(value: str | float) -> float:
    """A Kubernetes CPU quantity ("500m", "2", 1.5) as a number of CPUs."""
    text = str(value).strip()
    try:
        amount = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ConfigError(
            f"resources.requests.cpu: {value!r} is not a CPU quantity; use e.g. 500m or 2"
        ) from None
    if amount <= 0:
        raise ConfigError(f"resources.requests.cpu: {value!r} must be more than 0")
    return amount


def memory_bytes(value: str) -> int:
    """A Kubernetes memory quantity ("512Mi", "1G", "1e9") in bytes."""
    match = _QUANTITY.match(str(value).strip())
    suffix = match.group(3) if match else None
    if match is None or (suffix not in _BINARY and suffix not in _DECIMAL):
        raise ConfigError(
            f"resources.requests.memory: {value!r} is not a memory quantity; use e.g. 512Mi or 1Gi"
        )
    number = float(match.group(1)) * 10 ** int(match.group(2) or 0)
    amount = int(number * _BINARY.get(suffix, _DECIMAL.get(suffix, 1)))
    if amount <= 0:
        raise ConfigError(f"resources.requests.memory: {value!r} must be more than 0")
    return amount
