"""Java jars for the benchmark, from Maven Central, cached outside the repository.

The same recipe as the sandbox's broker jars: a tiny generated pom and
``mvn dependency:copy-dependencies``, once, into ``~/.cache/kafka-replicator``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from ..sandbox import LOG4J_VERSION, SLF4J_VERSION, DEPENDENCY_PLUGIN_VERSION, SandboxError, _cache_root, _file_lock

log = logging.getLogger(__name__)

# Maven Central as reached here serves kafka-tools 4.4.0 but not connect-mirror 4.4.0;
# 4.3.1 is the newest MirrorMaker 2 it serves (its clients talk to 4.4.0 brokers as usual).
MIRROR_MAKER_VERSION = "4.3.1"
TOOLS_VERSION = "4.4.0"
MAVEN_TIMEOUT_SECONDS = 900.0

_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-replicator</groupId>
  <artifactId>{name}</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{plugin}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def mirror_maker_libs() -> Path:
    """Jars of MirrorMaker 2 (org.apache.kafka:connect-mirror and its runtime)."""
    return _libs("connect-mirror", MIRROR_MAKER_VERSION)


def tools_libs() -> Path:
    """Jars of Kafka's command-line tools (ProducerPerformance, ConsumerPerformance)."""
    return _libs("kafka-tools", TOOLS_VERSION)


def _libs(artifact: str, version: str) -> Path:
    home = _cache_root() / f"bench-{artifact}-{version}"
    libs, done = home / "libs", home / ".complete"
    if done.exists():
        return libs
    with _file_lock(home / ".lock"):
        if done.exists():
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise SandboxError(f"Maven (mvn) is needed once to download org.apache.kafka:{artifact}")
        shutil.rmtree(libs, ignore_errors=True)
        (home / "pom.xml").write_text(_POM.format(
            name=f"bench-{artifact}", artifact=artifact, version=version,
            log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION, plugin=DEPENDENCY_PLUGIN_VERSION))
        output = home / "mvn.log"
        log.info("downloading org.apache.kafka:%s:%s from Maven Central into %s (once)",
                 artifact, version, home)
        started = time.monotonic()
        with open(output, "wb") as out:
            try:
                subprocess.run(
                    [mvn, "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=libs",
                     "-DincludeScope=runtime"],
                    cwd=home, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    timeout=MAVEN_TIMEOUT_SECONDS, check=True)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                tail = output.read_text(errors="replace").splitlines()[-20:]
                raise SandboxError(f"Maven could not fetch org.apache.kafka:{artifact}:{version} "
                                   f"({exc}); see {output}:\n" + "\n".join(tail)) from None
        done.write_text(f"{version}\n")
        log.info("%s jars ready in %.0fs", artifact, time.monotonic() - started)
    return libs
