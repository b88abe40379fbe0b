"""Java jars for the benchmark, from Maven Central, cached outside the repository.

The same recipe as the sandbox's broker jars: a tiny generated pom and
``mvn dependency:copy-dependencies``, once, into ``~/.cache/kafka-replicator``.
"""

from __future__ import annotations

from pathlib import Path

from ..sandbox import maven_libs

# Maven Central as reached here serves kafka-tools 4.4.0 but not connect-mirror 4.4.0;
# 4.3.1 is the newest MirrorMaker 2 it serves (its clients talk to 4.4.0 brokers as usual).
MIRROR_MAKER_VERSION = "4.3.1"
TOOLS_VERSION = "4.4.0"


def mirror_maker_libs() -> Path:
    """Jars of MirrorMaker 2 (org.apache.kafka:connect-mirror and its runtime)."""
    return _libs("connect-mirror", MIRROR_MAKER_VERSION)


def tools_libs() -> Path:
    """Jars of Kafka's command-line tools (ProducerPerformance, ConsumerPerformance)."""
    return _libs("kafka-tools", TOOLS_VERSION)


def _libs(artifact: str, version: str) -> Path:
    return maven_libs(artifact, version, cache_name=f"bench-{artifact}-{version}")
