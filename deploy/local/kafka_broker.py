"""Apache Kafka, one broker in KRaft combined mode, from Maven Central jars on JDK 17."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from deploy.local.exceptions import DownloadFailed, MissingDependency, StackError
from deploy.local.process import port_open
from deploy.local.service import LocalService, PortSpec
from streams.kafka.admin import broker_ready

log = logging.getLogger(__name__)

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J = KAFKA_DIR / "log4j2.properties"
MIN_JAVA = 17


def java_binary() -> str:
    """The JDK's ``java``: $JAVA_HOME first, then PATH; it must be version 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise MissingDependency(
            "no Java runtime found. Kafka needs JDK 17+: `apt-get install openjdk-17-jre-headless`, "
            "or set JAVA_HOME to a JDK 17 installation."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):  # "1.8.0" style
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise MissingDependency(
            f"{java} is Java {major or 'unknown'}; Kafka {MIN_JAVA}+ is required. "
            "Install openjdk-17-jre-headless or point JAVA_HOME at a JDK 17."
        )
    return java


class KafkaBroker(LocalService):
    name = "kafka"

    @property
    def marker(self) -> str:
        return str(self.properties_file)

    @property
    def properties_file(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def libs_dir(self) -> Path:
        # Shared across state dirs (tests use their own), keyed by version and pom contents.
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:10]
        return self.stack.cache_dir / f"kafka-{self.stack.kafka_version}-{digest}" / "libs"

    @property
    def endpoint(self) -> str:
        return f"{self.stack.host}:{self.stack.kafka_port}"

    def ports(self) -> list[PortSpec]:
        return [
            PortSpec(self.stack.kafka_port, "AVREC_STACK__KAFKA_PORT"),
            PortSpec(self.stack.kafka_controller_port, "AVREC_STACK__KAFKA_CONTROLLER_PORT"),
        ]

    # -- install -----------------------------------------------------------------
    def fetch_jars(self) -> Path:
        """Download the broker's jars with Maven once; later calls reuse the cache."""
        done = self.libs_dir.parent / ".complete"
        if done.exists() and any(self.libs_dir.glob("kafka_2.13-*.jar")):
            return self.libs_dir
        mvn = shutil.which("mvn")
        if not mvn:
            raise MissingDependency(
                "Maven (`mvn`) is needed once to fetch Kafka's jars from Maven Central: `apt-get install maven`."
            )
        tmp = self.libs_dir.parent / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        cmd = [
            mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
            f"-Dkafka.version={self.stack.kafka_version}",
        ]
        log.info("fetching Kafka %s jars from Maven Central (first run only)", self.stack.kafka_version)
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            raise DownloadFailed(
                "Maven did not finish fetching Kafka's jars within 15 minutes. Check the network "
                "connection to Maven Central and run `avrec stack up` again."
            ) from None
        if out.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
            tail = "\n".join((out.stdout + out.stderr).splitlines()[-25:])
            raise DownloadFailed(
                f"fetching Kafka {self.stack.kafka_version} from Maven Central failed (mvn exit {out.returncode}). "
                f"Check the network and the version (AVREC_STACK__KAFKA_VERSION), then retry.\n{tail}"
            )
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        tmp.rename(self.libs_dir)
        done.write_text(self.stack.kafka_version)
        return self.libs_dir

    def write_properties(self) -> None:
        s = self.stack
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{s.host}:{s.kafka_controller_port}",
            "listeners": f"PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            "advertised.listeners": f"PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # One broker: internal topics cannot be replicated.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Tests and a single local worker join groups often; don't wait 3 s each time.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": "60000",
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def format_storage(self, java: str) -> None:
        """Format the KRaft log dir with Kafka's own storage tool, only the first time."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = _kafka_uuid()
        cmd = [
            java, "-cp", f"{self.libs_dir}/*", f"-Dlog4j2.configurationFile={LOG4J}",
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.properties_file),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise StackError(f"formatting Kafka storage in {self.data_dir} failed:\n{out.stdout}{out.stderr}")
        log.info("formatted KRaft storage %s (cluster id %s)", self.data_dir, cluster_id)

    def prepare(self) -> None:
        self._java = java_binary()
        self.fetch_jars()
        self.write_properties()
        self.format_storage(self._java)

    def argv(self) -> list[str]:
        java = getattr(self, "_java", None) or java_binary()
        return [
            java, f"-Xmx{self.stack.kafka_heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp", f"{self.libs_dir}/*", "kafka.Kafka", str(self.properties_file),
        ]

    def is_ready(self) -> bool:
        if not port_open(self.stack.host, self.stack.kafka_port):
            return False
        return broker_ready(self.settings.kafka, timeout_s=2.0)


def _kafka_uuid() -> str:
    """A random cluster id in Kafka's format: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-`` (1 in 64 would): the storage tool would read it as an
    option and refuse to format. Kafka's own ``Uuid.randomUuid()`` avoids them the same way.
    """
    import base64

    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid
