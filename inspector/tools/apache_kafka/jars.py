"""Apache Kafka's broker jars from Maven Central, fetched once into a cache outside the checkout."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from inspector.errors import InspectorError

log = logging.getLogger(__name__)

#: The broker version; ``deploy/compose.yaml`` runs ``apache/kafka:`` this tag (a test checks).
KAFKA_VERSION = "3.9.1"
#: Scala build of the broker artifact.
SCALA_VERSION = "2.13"
#: Largest record: ``kafka.max_message_bytes`` (20 MiB), so full-resolution frames fit.
MAX_MESSAGE_BYTES = 20 * 2**20

_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>inspector.local</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>1.7.36</version></dependency>
  </dependencies>
</project>
"""


class KafkaLaunchError(InspectorError):
    """Apache Kafka could not be fetched or started; the message says what is missing."""


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the broker's jars are kept between runs (outside any checkout)."""
    given = os.environ.get("INSPECTOR_KAFKA_CACHE")
    if given:
        return Path(given).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "inspector" / f"kafka-{version}"


def _tool(name: str, install: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise KafkaLaunchError(f"Apache Kafka for tests needs `{name}` on PATH: {install}")
    return found


def java_executable() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on ``PATH`` (Java 17 runs Kafka 3.9)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return _tool("java", "apt-get install openjdk-17-jre-headless (or set JAVA_HOME)")


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """The folder of the broker's jars, fetched with Maven on first use.

    Concurrent callers (parallel test sessions) wait on a lock instead of fetching twice; a
    complete fetch is marked by a stamp file, so an interrupted one is redone.

    Raises:
        KafkaLaunchError: Maven is missing or Maven Central cannot be reached.
    """
    root = cache_dir(version)
    libs, stamp = root / "libs", root / ".complete"
    if stamp.exists():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return libs
        mvn = _tool("mvn", "apt-get install maven (it fetches the broker from Maven Central)")
        shutil.rmtree(libs, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="inspector-kafka-pom-") as work:
            (Path(work) / "pom.xml").write_text(_POM.format(scala=SCALA_VERSION, version=version))
            log.info("fetching Apache Kafka %s from Maven Central into %s", version, libs)
            done = subprocess.run(
                [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={libs}"],
                cwd=work, capture_output=True, text=True, check=False, timeout=900,
            )  # fmt: skip
        if done.returncode != 0:
            raise KafkaLaunchError(
                f"Maven could not fetch org.apache.kafka:kafka_{SCALA_VERSION}:{version} "
                f"(exit {done.returncode}); check access to Maven Central (~/.m2/settings.xml "
                f"for a mirror): {(done.stdout + done.stderr)[-1500:]}"
            )
        stamp.write_text(version)
    return libs
