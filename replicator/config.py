"""The replicator's configuration: the same shape as the Helm chart's values.

One YAML file configures a local run, a Ray job and the chart's ConfigMap.
Keys are camelCase as in the chart; attributes are snake_case.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from . import quantity
from .errors import ConfigError

DIRECTIONS = ("sourceToTarget", "targetToSource")
# The replicator's own topics (registry.TOPIC, map_topic.TOPIC, acl_ledger.TOPIC), kept on each cluster.
OWN_TOPICS = ("kafka-replicator-producers", "kafka-replicator-offsets", "kafka-replicator-acls")
Direction = Literal["sourceToTarget", "targetToSource"]
OffsetReset = Literal["earliest", "latest"]

# Keys that only the Helm chart reads (image, Ray sizing, ...). A values file
# may carry them so that one file serves both; the replicator ignores them.
CHART_ONLY_KEYS = frozenset(
    {
        "image", "imagePullSecrets", "nameOverride", "fullnameOverride", "ray", "head",
        "worker", "workers", "serviceAccount", "podSecurityContext", "securityContext",
        "nodeSelector", "tolerations", "affinity", "metrics", "secrets", "dashboard",
        "podAnnotations", "podLabels", "driver", "terminationGracePeriodSeconds", "global",
    }
)
# Inside sourceKafka/targetKafka: the Secrets the chart turns into env vars and files.
CLUSTER_CHART_ONLY_KEYS = frozenset({"saslPasswordSecret", "sslKeyPasswordSecret", "tlsSecret"})


def _without(data: Any, keys: frozenset[str]) -> Any:
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k not in keys}
    return data


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


# host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")
# What Kafka accepts as a topic name (and "." and ".." it refuses).
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Leaves room for the source topic's name behind it.
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def _servers(bootstrap_servers: str) -> frozenset[str]:
    return frozenset(part.strip().lower() for part in bootstrap_servers.split(","))


class ClusterConfig(_Model):
    """How to reach one Kafka cluster (`sourceKafka` or `targetKafka`)."""

    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port...]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_env: str | None = Field(
        None, description="name of an environment variable holding the SASL password"
    )
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password: SecretStr | None = None
    ssl_key_password_env: str | None = None
    ssl_check_hostname: bool = True
    client_id: str = "kafka-replicator"

    _drop_chart_only_keys = model_validator(mode="before")(
        lambda data: _without(data, CLUSTER_CHART_ONLY_KEYS))

    @field_validator("bootstrap_servers")
    @classmethod
    def _is_a_host_port_list(cls, value: str) -> str:
        for part in value.split(","):
            match = _HOST_PORT.match(part.strip())
            if match is None or not 0 < int(match.group(2)) < 65536:
                raise ValueError(f"{value!r} is not a comma-separated list of host:port; "
                                 "e.g. kafka-0.kafka:9092,kafka-1.kafka:9092")
        return value

    @model_validator(mode="after")
    def _security_is_complete(self) -> ClusterConfig:
        uses_sasl = self.security_protocol.startswith("SASL")
        if uses_sasl:
            if self.sasl_mechanism is None:
                raise ValueError(
                    f"securityProtocol {self.security_protocol} needs saslMechanism "
                    "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
                )
            if not self.sasl_username:
                raise ValueError(f"securityProtocol {self.security_protocol} needs saslUsername")
            if self.sasl_password is None and not self.sasl_password_env:
                raise ValueError(
                    f"securityProtocol {self.security_protocol} needs saslPassword or "
                    "saslPasswordEnv (the name of an environment variable holding it)"
                )
        elif self.sasl_mechanism or self.sasl_username:
            raise ValueError(
                "saslMechanism/saslUsername are set but securityProtocol is "
                f"{self.security_protocol}; use SASL_PLAINTEXT or SASL_SSL"
            )
        if self.sasl_password is not None and self.sasl_password_env:
            raise ValueError("set saslPassword or saslPasswordEnv, not both")
        return self

    def resolved_sasl_password(self) -> str | None:
        """The SASL password, from the file or from its environment variable."""
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        return _secret_from_env(self.sasl_password_env)

    def resolved_ssl_key_password(self) -> str | None:
        if self.ssl_key_password is not None:
            return self.ssl_key_password.get_secret_value()
        return _secret_from_env(self.ssl_key_password_env)


def _secret_from_env(name: str | None) -> str | None:
    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(
            f"environment variable {name} is not set; it must hold the secret the config refers to"
        )
    return value


class GroupConfig(_Model):
    """The consumer group of one direction (`consumerGroup.<direction>`)."""

    group_id: str = Field(min_length=1)
    session_timeout_ms: int = Field(45000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    max_poll_records: int = Field(500, ge=1, description="accepted from the original chart's values; no effect")
    max_poll_interval_ms: int = Field(300000, ge=1000)
    auto_offset_reset: OffsetReset | None = Field(
        None, description="defaults to consumer.autoOffsetReset"
    )
    enable_auto_commit: bool = Field(
        True,
        description="true: commit acknowledged offsets every autoCommitIntervalMs; "
        "false: commit as soon as the target acknowledges",
    )
    auto_commit_interval_ms: int = Field(1000, ge=10)
    partition_assignment_strategy: Literal["cooperative-sticky", "range", "roundrobin"] = (
        "cooperative-sticky"
    )

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> GroupConfig:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeatIntervalMs ({self.heartbeat_interval_ms}) must be lower than "
                f"sessionTimeoutMs ({self.session_timeout_ms}); a third of it is usual"
            )
        return self


class ConsumerGroups(_Model):
    """`consumerGroup`: a group id string or a full object per direction. The default ids are
    the original chart's, whose committed offsets a deployment that kept them resumes from."""

    source_to_target: GroupConfig = GroupConfig(group_id="kafka-replicator-s2t-v4")
    target_to_source: GroupConfig = GroupConfig(group_id="kafka-replicator-t2s-v4")

    @field_validator("source_to_target", "target_to_source", mode="before")
    @classmethod
    def _group_id_shorthand(cls, value: Any) -> Any:
        return {"groupId": value} if isinstance(value, str) else value


class ConsumerConfig(_Model):
    """`consumer`: settings shared by both directions' source consumers."""

    auto_offset_reset: OffsetReset = "earliest"
    fetch_max_bytes: int = Field(52428800, ge=1024)
    max_partition_fetch_bytes: int = Field(1048576, ge=1024)
    # While records flow: a fetch waits at the broker for this many bytes or this long.
    fetch_min_bytes: int = Field(65536, ge=1)
    fetch_max_wait_ms: int = Field(10, ge=0, le=1000)


class ProducerConfig(_Model):
    """`producer`: settings of the target producers.

    Always acks=all and idempotent: batches carry our producer id and per-partition
    sequence numbers, so retries neither duplicate nor reorder them.
    """

    linger_ms: int = Field(5, ge=0, description="accepted from older values files; no effect")
    batch_size: int = Field(262144, ge=0)
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    max_request_size: int = Field(1048576, ge=1024)
    delivery_timeout_ms: int = Field(120000, ge=1000, description="accepted from older values files; no effect")


class Route(_Model):
    """One topic to copy: `topics[]` of a direction."""

    source_topic_name: str = Field(min_length=1)
    target_topic_name: str | None = Field(None, description="defaults to sourceTopicName")

    @field_validator("source_topic_name", "target_topic_name")
    @classmethod
    def _kafka_accepts_the_name(cls, value: str | None) -> str | None:
        if value is not None and (not _TOPIC_NAME.match(value) or value in (".", "..")):
            raise ValueError(f"{value!r} is not a topic name Kafka accepts: use letters, digits, "
                             "'.', '_' and '-', at most 249 characters")
        return value

    @property
    def target(self) -> str:
        return self.target_topic_name or self.source_topic_name


class SyncGroupOffsets(_Model):
    """`replication.<direction>.syncGroupOffsets`: groups whose offsets follow to the target."""

    enabled: bool = False
    groups: list[str] = Field(default_factory=list,
                              description="group names, or regular expressions matching whole names")
    interval_seconds: float = Field(10.0, ge=1.0)

    @model_validator(mode="after")
    def _groups_are_named_and_valid(self) -> SyncGroupOffsets:
        if self.enabled and not self.groups:
            raise ValueError("enabled is true but no groups are named; add groups: "
                             "[a group name or a regular expression such as 'orders-.*']")
        for pattern in self.groups:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"groups: {pattern!r} is not a valid regular "
                                 f"expression ({exc}); escape special characters with \\") from None
        return self


class SyncTopicConfigs(_Model):
    """`replication.<direction>.syncTopicConfigs`: source topics' config changes followed."""

    enabled: bool = False
    exclude: list[str] = Field(default_factory=list,
                               description="config names, or regular expressions matching whole names, never synced")

    @field_validator("exclude")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        return _compiled(patterns)


class SyncAcls(_Model):
    """`replication.<direction>.syncAcls`: the source's ACLs on replicated topics and synced
    groups kept on the target (acl_sync.py says how, and why they never widen access)."""

    enabled: bool = False
    interval_seconds: float = Field(60.0, ge=1.0)


def _compiled(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({exc}); "
                             "escape special characters with \\") from None
    return patterns


class DirectionConfig(_Model):
    """`replication.<direction>`."""

    enabled: bool = True
    topics: list[Route] = Field(default_factory=list)
    include: list[str] = Field(default_factory=list,
                               description="regular expressions matching whole source topic names")
    exclude: list[str] = Field(default_factory=list,
                               description="regular expressions: topics left out of `include`")
    target_topic_prefix: str = Field("", description="prepended to pattern-selected topics' names on the target")
    topic_refresh_seconds: float = Field(10.0, ge=0.1, description="how often the source's topics are listed")
    replica_count: int | None = Field(None, ge=0, description="overrides replicaCount")
    partitioning: Literal["preserve", "hash"] = "preserve"
    create_topics: bool = True
    on_error: Literal["fail", "skip"] = "fail"
    mode: Literal["batch", "record"] = Field(
        "batch",
        description="batch: copy record batches as bytes; record: re-encode each record "
        "with provenance headers",
    )
    sync_group_offsets: SyncGroupOffsets = SyncGroupOffsets()
    sync_topic_configs: SyncTopicConfigs = SyncTopicConfigs()
    sync_acls: SyncAcls = SyncAcls()
    exactly_once: bool = Field(
        False,
        description="commit the copies and the next source offsets together in transactions "
        "on the target (readers need isolation.level=read_committed)",
    )

    @field_validator("include", "exclude")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        return _compiled(patterns)

    @field_validator("target_topic_prefix")
    @classmethod
    def _prefix_makes_topic_names(cls, value: str) -> str:
        if value and not _TOPIC_PREFIX.match(value):
            raise ValueError(f"{value!r} cannot begin a topic name: use letters, digits, '.', '_' "
                             "and '-', at most 200 characters")
        return value

    @model_validator(mode="after")
    def _routes_are_distinct(self) -> DirectionConfig:
        seen: dict[str, str] = {}
        for route in self.topics:
            if route.source_topic_name in seen:
                raise ValueError(f"sourceTopicName {route.source_topic_name!r} is listed twice")
            seen[route.source_topic_name] = route.target
        if self.sync_topic_configs.enabled and not self.create_topics:
            raise ValueError("syncTopicConfigs.enabled needs createTopics: true (with createTopics: "
                             "false the replicator never changes a target topic)")
        return self


class Replication(_Model):
    source_to_target: DirectionConfig = DirectionConfig(enabled=False)
    target_to_source: DirectionConfig = DirectionConfig(enabled=False)


class ResourceAmounts(_Model):
    cpu: str | float | None = None
    memory: str | None = None

    @field_validator("cpu")
    @classmethod
    def _cpu_is_a_quantity(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            quantity.cpus(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory_is_a_quantity(cls, value: str | None) -> str | None:
        if value is not None:
            quantity.memory_bytes(value)
        return value


class Resources(_Model):
    """Kubernetes-style resources; requests size each Ray actor."""

    requests: ResourceAmounts = ResourceAmounts()
    limits: ResourceAmounts = ResourceAmounts()


class ReplicatorConfig(_Model):
    """The whole file."""

    source_kafka: ClusterConfig
    target_kafka: ClusterConfig
    consumer_group: ConsumerGroups = ConsumerGroups()
    replica_count: int = Field(1, ge=0)
    consumer: ConsumerConfig = ConsumerConfig()
    producer: ProducerConfig = ProducerConfig()
    replication: Replication = Replication()
    resources: Resources = Resources()
    shutdown_grace_period_seconds: float = Field(30.0, gt=0)

    _drop_chart_only_keys = model_validator(mode="before")(
        lambda data: _without(data, CHART_ONLY_KEYS))

    @model_validator(mode="after")
    def _enabled_directions_have_topics(self) -> ReplicatorConfig:
        if not self.enabled_directions():
            raise ValueError(
                "no direction is enabled; set replication.sourceToTarget or "
                "replication.targetToSource with enabled: true and its topics"
            )
        for name in DIRECTIONS:
            direction = self.direction(name)
            if direction.enabled and not direction.topics and not direction.include:
                raise ValueError(
                    f"replication.{name} is enabled but lists no topics; add "
                    "topics: [{sourceTopicName: ..., targetTopicName: ...}] or include: "
                    "[regular expressions], or set enabled: false"
                )
        if _servers(self.source_kafka.bootstrap_servers) == _servers(self.target_kafka.bootstrap_servers):
            for name in self.enabled_directions():
                direction = self.direction(name)
                if direction.include and not direction.target_topic_prefix:
                    raise ValueError(
                        f"replication.{name}: the topics include selects would be copied onto "
                        "themselves, since sourceKafka and targetKafka are the same cluster; "
                        "set targetTopicPrefix")
                for route in direction.topics:
                    if route.target == route.source_topic_name:
                        raise ValueError(
                            f"replication.{name}: topic {route.source_topic_name!r} would be copied "
                            "onto itself, since sourceKafka and targetKafka are the same cluster; "
                            "give it another targetTopicName")
        return self

    def warnings(self) -> list[str]:
        """What is valid but likely a mistake: said by `check` and logged at start."""
        found = [f"{key} has no effect: {why}" for key, why in self._keys_without_effect()]
        for name in self.enabled_directions():
            sources: dict[str, list[str]] = {}
            for route in self.direction(name).topics:
                sources.setdefault(route.target, []).append(route.source_topic_name)
            for target, names in sources.items():
                if len(names) > 1:
                    found.append(f"replication.{name}: {' and '.join(map(repr, names))} are copied into "
                                 f"the same target topic {target!r}, where their records mix (fine if meant)")
            found.extend(self._pattern_warnings(name))
        return found

    def _pattern_warnings(self, name: str) -> list[str]:
        direction = self.direction(name)
        found = []
        for pattern in direction.include:
            matched = [topic for topic in OWN_TOPICS if re.fullmatch(pattern, topic)]
            if matched:
                found.append(f"replication.{name}.include: {pattern!r} matches the replicator's own "
                             f"topics ({', '.join(matched)}); they are never replicated (each cluster "
                             "keeps its own), nor are Kafka's internal '__' topics")
        for pattern in direction.exclude:
            for route in direction.topics:
                if re.fullmatch(pattern, route.source_topic_name):
                    found.append(f"replication.{name}.exclude: {pattern!r} matches "
                                 f"{route.source_topic_name!r}, which topics[] lists: it is replicated "
                                 "anyway (an explicit topic wins over patterns); remove one of the two")
        return found

    def _keys_without_effect(self) -> list[tuple[str, str]]:
        keys = []
        for name in self.enabled_directions():
            if "max_poll_records" in self.group(name).model_fields_set:
                keys.append((f"consumerGroup.{name}.maxPollRecords",
                             "the replicator fetches record batches itself, as many as "
                             "consumer.fetchMaxBytes and consumer.maxPartitionFetchBytes let through"))
        if "linger_ms" in self.producer.model_fields_set:
            keys.append(("producer.lingerMs", "each fetch is written to the target as it arrives"))
        if "delivery_timeout_ms" in self.producer.model_fields_set:
            keys.append(("producer.deliveryTimeoutMs", "a batch is sent again until the target "
                         "acknowledges it or the member stops, and only acknowledged offsets are committed"))
        return keys

    def direction(self, name: str) -> DirectionConfig:
        return getattr(self.replication, _attr(name))

    def group(self, name: str) -> GroupConfig:
        return getattr(self.consumer_group, _attr(name))

    def enabled_directions(self) -> list[str]:
        return [name for name in DIRECTIONS if self.direction(name).enabled]

    def members(self, name: str) -> int:
        """How many consumer-group members run this direction."""
        override = self.direction(name).replica_count
        return self.replica_count if override is None else override

    def offset_reset(self, name: str) -> str:
        return self.group(name).auto_offset_reset or self.consumer.auto_offset_reset

    def clusters(self, name: str) -> tuple[tuple[str, ClusterConfig], tuple[str, ClusterConfig]]:
        """(side, cluster) pairs the direction reads from and writes to."""
        source = ("source", self.source_kafka)
        target = ("target", self.target_kafka)
        return (source, target) if name == "sourceToTarget" else (target, source)


def _attr(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}; use one of {', '.join(DIRECTIONS)}")
    return "source_to_target" if direction == "sourceToTarget" else "target_to_source"


def load_config(path: str | Path) -> ReplicatorConfig:
    """Read and validate a YAML config file, or raise ConfigError naming each problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping with sourceKafka, targetKafka, ...")
    return parse_config(data, origin=str(path))


def parse_config(data: dict, origin: str = "config") -> ReplicatorConfig:
    try:
        return ReplicatorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  - {_describe(error)}" for error in exc.errors())
        raise ConfigError(f"{origin} is invalid:\n{problems}") from None


def _describe(error: dict) -> str:
    loc = error["loc"]
    path = ".".join(str(part) for part in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        valid = _valid_keys_at(ReplicatorConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
        return f"{path}: unknown key; {hint}"
    if error["type"] == "missing":
        return f"{path}: required field is missing"
    # Secrets are never echoed: pydantic's message does not include the input.
    message = error["msg"].removeprefix("Value error, ")
    return f"{path}: {message}"


def _valid_keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys accepted at `loc`, by walking the models' fields."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
