"""ACL sync (`syncAcls`): the source's ACLs on replicated topics and synced groups, on the target.

A pass (`AclSync.sync`, every `intervalSeconds`) lists the source's topic and group ACLs,
works out the target ACLs that stand for them (acls.py: the same principal, host, operation
and permission type, never a wider resource), creates those the target lacks, and removes
those that this replicator created (acl_ledger.py) and that no source ACL stands for any more.
An ACL made by hand on the target is never removed, even one equal to a copy. An ACL that a
replicator created on the source is not copied: replicating both ways, an ACL removed on one
side would otherwise come back from the other.

Within a pass DENYs are created first and removed last, and ALLOWs removed before new ones
are created, so that at no moment does a pass grant more than before it or after it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from kafka.admin import ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType
from kafka.admin import ResourcePatternFilter, ResourceType
from kafka.errors import AuthorizationError, SecurityDisabledError

from . import acl_ledger, link
from .acls import Binding, wanted
from .config import ClusterConfig, ReplicatorConfig
from .errors import AclSyncRefused

log = logging.getLogger(__name__)

_EVERY_ACL = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                       ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
_REFUSALS = (AuthorizationError, SecurityDisabledError)
# What each step needs, and the kafka-acls.sh options that grant it.
_LIST = ("Describe the cluster, which listing its ACLs needs", "--operation Describe --cluster")
_CHANGE = ("Alter the cluster, which creating and deleting ACLs needs (and Describe, to list them)",
           "--operation Alter --operation Describe --cluster")
_LEDGER = (f"use topic {acl_ledger.TOPIC!r}, where ACL sync records the ACLs it created",
           f"--operation Create --operation Describe --operation Read --operation Write "
           f"--topic {acl_ledger.TOPIC}")
_SOURCE_LEDGER = (f"read topic {acl_ledger.TOPIC!r}, where a replicator records the ACLs it "
                  "created (those are not copied back)",
                  f"--operation Describe --operation Read --topic {acl_ledger.TOPIC}")


@dataclass(frozen=True)
class AclFigures:
    """What one pass did."""

    created: int = 0
    removed: int = 0
    kept: int = 0  # target ACLs standing for a source ACL that were there already
    refused: bool = False  # refused again, after AclSyncRefused said why once


def principal_of(cluster: ClusterConfig) -> str | None:
    """The principal the brokers most likely see; None: that of the client certificate."""
    if cluster.security_protocol.startswith("SASL"):
        return f"User:{cluster.sasl_username}"
    return "User:ANONYMOUS" if cluster.ssl_cert_file is None else None


class AclSync:
    """Keeps one direction's target ACLs in step with its source's. Keep one for the direction's
    life: it remembers the refusal it raised, and reads the ledgers on from where it stopped."""

    def __init__(self, source_admin, target_admin, config: ReplicatorConfig, direction: str):
        self._source_admin = source_admin
        self._target_admin = target_admin
        self._direction = direction
        (self._source_side, self._source), (self._target_side, self._target) = config.clusters(direction)
        self._prefix = config.direction(direction).target_topic_prefix
        self._owner = config.group(direction).group_id
        self._ledger = acl_ledger.Ledger(link.client_settings(self._target), self._owner)
        self._source_ledger: acl_ledger.Ledger | None = None  # once the source has a ledger
        self._ledger_topic_ready = False
        self._refusal: str | None = None  # the refusal raised last
        self._warned: set[tuple[Binding, str]] = set()  # an ACL the target refused, said once

    def sync(self, routes: dict[str, str], groups: list[str]) -> AclFigures:
        """One pass for the topics replicated now (source → target) and the synced groups.

        Raises AclSyncRefused when a cluster refuses what the pass needs; while the same
        refusal goes on, later passes return figures with `refused` set instead of raising
        again, so that it is said once rather than at every interval."""
        try:
            figures = self._pass(routes, groups)
        except AclSyncRefused as refused:
            if str(refused) == self._refusal:
                return AclFigures(refused=True)
            self._refusal = str(refused)
            raise
        if self._refusal is not None:
            log.info("ACL sync (%s): accepted again", self._direction)
            self._refusal = None
        return figures

    def close(self) -> None:
        self._ledger.close()
        if self._source_ledger is not None:
            self._source_ledger.close()

    def _pass(self, routes: dict[str, str], groups: list[str]) -> AclFigures:
        source = self._listed(self._source_admin, self._source_side, _LIST) - self._copies_on_source()
        standing = wanted(source, routes, groups, self._prefix)
        present = self._listed(self._target_admin, self._target_side, _CHANGE)
        holders = self._holders()
        ours = {binding for binding, owners in holders.items() if self._owner in owners}
        create = sorted(binding for binding in standing if binding not in present)
        remove = sorted(binding for binding in ours if binding not in standing)
        # Gone already, or still another replicator's: only our entry goes.
        delete = [binding for binding in remove if binding in present and holders[binding] == {self._owner}]
        with self._asking(self._target_side, _LEDGER):
            self._ledger.claim([binding for binding in create if binding not in ours])
        created = self._create([b for b in create if b.permission == "DENY"], standing)
        removed = self._delete([b for b in delete if b.permission == "ALLOW"])
        created += self._create([b for b in create if b.permission == "ALLOW"], standing)
        removed += self._delete([b for b in delete if b.permission == "DENY"])
        with self._asking(self._target_side, _LEDGER):
            self._ledger.release(remove)
        return AclFigures(created=created, removed=removed, kept=len(standing) - len(create))

    def _listed(self, admin, side: str, need: tuple[str, str]) -> set[Binding]:
        with self._asking(side, need):
            found, _ = admin.describe_acls(_EVERY_ACL)
        return {Binding.of(acl) for acl in found}

    def _holders(self) -> dict[Binding, set[str]]:
        with self._asking(self._target_side, _LEDGER):
            if not self._ledger_topic_ready:
                acl_ledger.ensure_topic(self._target_admin)
                self._ledger_topic_ready = True
            return self._ledger.holders()

    def _copies_on_source(self) -> set[Binding]:
        """The source's ACLs that a replicator created there."""
        with self._asking(self._source_side, _SOURCE_LEDGER):
            if self._source_ledger is None:
                if acl_ledger.TOPIC not in set(self._source_admin.list_topics()):
                    return set()
                self._source_ledger = acl_ledger.Ledger(link.client_settings(self._source), self._owner)
            return set(self._source_ledger.holders())

    def _create(self, bindings: list[Binding], standing: dict[Binding, Binding]) -> int:
        if not bindings:
            return 0
        with self._asking(self._target_side, _CHANGE):
            answer = self._target_admin.create_acls([binding.acl() for binding in bindings])
        succeeded = {Binding.of(acl) for acl in answer["succeeded"]}
        failed = [binding for binding in bindings if binding not in succeeded]
        for binding, error in zip(failed, answer["failed"]):
            self._refuse_on(error, _CHANGE)
            self._warn_once(binding, "create", error)
        for binding in bindings:
            if binding in succeeded:
                log.info("ACL sync (%s): created %s on the %s cluster, for the %s cluster's %s",
                         self._direction, binding, self._target_side, self._source_side, standing[binding])
        return len(succeeded)

    def _delete(self, bindings: list[Binding]) -> int:
        if not bindings:
            return 0
        with self._asking(self._target_side, _CHANGE):
            answer = self._target_admin.delete_acls([binding.exact_filter() for binding in bindings])
        removed = 0
        for binding, (_, matched, error) in zip(bindings, answer):
            if error.errno != 0:
                self._refuse_on(error, _CHANGE)
                self._warn_once(binding, "delete", error)
            elif matched:
                removed += 1
                log.info("ACL sync (%s): removed %s from the %s cluster: no ACL of the %s cluster "
                         "stands for it any more", self._direction, binding, self._target_side,
                         self._source_side)
        return removed

    def _warn_once(self, binding: Binding, action: str, error: type) -> None:
        if (binding, action) not in self._warned:
            self._warned.add((binding, action))
            log.warning("ACL sync (%s): the %s cluster refused to %s %s (%s); it is tried again at "
                        "each pass", self._direction, self._target_side, action, binding, error.__name__)

    def _refuse_on(self, error: type, need: tuple[str, str]) -> None:
        if issubclass(error, _REFUSALS):
            raise self._refused(self._target_side, error, need)

    @contextmanager
    def _asking(self, side: str, need: tuple[str, str]) -> Iterator[None]:
        try:
            yield
        except _REFUSALS as exc:
            raise self._refused(side, type(exc), need) from None

    def _refused(self, side: str, error: type, need: tuple[str, str]) -> AclSyncRefused:
        cluster = self._source if side == self._source_side else self._target
        turn_off = f"set replication.{self._direction}.syncAcls.enabled: false"
        if issubclass(error, SecurityDisabledError):
            return AclSyncRefused(side, cluster.bootstrap_servers, (
                f"ACL sync needs an authorizer and this cluster has none ({error.__name__}); set "
                f"authorizer.class.name on its brokers, or {turn_off}"))
        principal = principal_of(cluster)
        what, options = need
        return AclSyncRefused(side, cluster.bootstrap_servers, (
            f"ACL sync was refused ({error.__name__}): "
            f"{principal or 'the principal of the client certificate (sslCertFile)'} may not {what}; "
            f"grant it, e.g. kafka-acls.sh --bootstrap-server {cluster.bootstrap_servers} --add "
            f"--allow-principal {principal or 'User:<that principal>'} {options}, or {turn_off}"))
