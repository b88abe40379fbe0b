"""Which target ACLs stand for the source's: the rules of ACL sync, without a cluster.

Each binding keeps its principal, host, operation and permission type; only its resource
changes, to the target's name of what it covers, and only where that cannot grant more than
the source does:

- a LITERAL ACL on a replicated topic (or synced group) becomes a LITERAL ACL on its copy;
- a PREFIXED or wildcard ('*') ACL becomes LITERAL ACLs on the copies of the replicated topics
  it covers: a target prefix could also cover target topics that are no copies of the
  source's; only a PREFIXED DENY whose covered topics are all renamed by a plain prefix
  (`targetTopicPrefix`, or none) is copied as PREFIXED: a DENY can only narrow access, and so
  it also covers copies made before the next pass;
- a target topic fed by several source topics gets an ALLOW only if each of them has it,
  since its readers read all of their records there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Iterable

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)

WILDCARD = "*"  # a LITERAL ACL named '*' covers every resource of its type
SYNCED_TYPES = ("TOPIC", "GROUP")


@dataclass(frozen=True, order=True)
class Binding:
    """One ACL, by the names of its enums (readable in the ledger and in logs)."""

    resource_type: str  # TOPIC, GROUP, ...
    name: str
    pattern: str  # LITERAL or PREFIXED
    principal: str
    host: str
    operation: str  # READ, WRITE, ALL, ...
    permission: str  # ALLOW or DENY

    @classmethod
    def of(cls, acl: ACL) -> Binding:
        pattern = acl.resource_pattern
        return cls(pattern.resource_type.name, pattern.resource_name, pattern.pattern_type.name,
                   acl.principal, acl.host, acl.operation.name, acl.permission_type.name)

    def acl(self) -> ACL:
        return ACL(self.principal, self.host, ACLOperation[self.operation],
                   ACLPermissionType[self.permission],
                   ResourcePattern(ResourceType[self.resource_type], self.name,
                                   ACLResourcePatternType[self.pattern]))

    def exact_filter(self) -> ACLFilter:
        """A filter that matches this binding only (for DeleteAcls)."""
        return ACLFilter(self.principal, self.host, ACLOperation[self.operation],
                         ACLPermissionType[self.permission],
                         ResourcePatternFilter(ResourceType[self.resource_type], self.name,
                                               ACLResourcePatternType[self.pattern]))

    def on(self, name: str, pattern: str = "LITERAL") -> Binding:
        return replace(self, name=name, pattern=pattern)

    def __str__(self) -> str:
        if self.pattern == "PREFIXED":
            where = f"{self.resource_type.lower()}s prefixed {self.name!r}"
        elif self.name == WILDCARD:
            where = f"every {self.resource_type.lower()}"
        else:
            where = f"{self.resource_type.lower()} {self.name!r}"
        return f"{self.permission} {self.principal} {self.operation} on {where} from host {self.host}"


def translated(binding: Binding, names: dict[str, str], prefix: str) -> set[Binding]:
    """The target bindings that stand for one source binding; `names` maps each replicated
    resource of its type to its target name, `prefix` is the plain rename (if that is how
    they are renamed)."""
    covered = _covered(binding, names)
    if (binding.pattern == "PREFIXED" and binding.permission == "DENY" and covered
            and all(names[name] == prefix + name for name in covered)):
        return {binding.on(prefix + binding.name, "PREFIXED")}
    return {binding.on(names[name]) for name in covered}


def wanted(source: Iterable[Binding], routes: dict[str, str], groups: Iterable[str],
           prefix: str) -> dict[Binding, Binding]:
    """Every target binding that stands for a source binding, with (one of) the source
    bindings it stands for; `routes` maps replicated source topics to their targets."""
    names = {"TOPIC": routes, "GROUP": {group: group for group in groups}}
    prefixes = {"TOPIC": prefix, "GROUP": ""}
    found: dict[Binding, Binding] = {}
    fed_by: dict[Binding, set[str]] = defaultdict(set)  # a target ALLOW → source topics granting it
    for binding in sorted(source):
        if binding.resource_type not in SYNCED_TYPES:
            continue
        kind = binding.resource_type
        for target in translated(binding, names[kind], prefixes[kind]):
            found.setdefault(target, binding)
            if kind == "TOPIC" and target.permission == "ALLOW":
                fed_by[target].update(source_topic for source_topic in _covered(binding, routes)
                                      if routes[source_topic] == target.name)
    feeders: dict[str, set[str]] = defaultdict(set)
    for source_topic, target_topic in routes.items():
        feeders[target_topic].add(source_topic)
    return {target: binding for target, binding in found.items()
            if target not in fed_by or fed_by[target] >= feeders[target.name]}


def _covered(binding: Binding, names: dict[str, str]) -> list[str]:
    """The resources among `names` that the binding applies to."""
    if binding.pattern == "PREFIXED":
        return [name for name in names if name.startswith(binding.name)]
    if binding.pattern != "LITERAL":
        return []
    return list(names) if binding.name == WILDCARD else [binding.name] if binding.name in names else []
