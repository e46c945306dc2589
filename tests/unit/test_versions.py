"""The Flink Kafka connector fetched by Maven must match the installed PyFlink (flink 2.2 line)."""

import re
from pathlib import Path

from flywheel.config import REPO_ROOT


def _pin(lock: Path, package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)", lock.read_text(), re.M)
    assert match, f"{package} is not pinned in {lock}"
    return match.group(1)


def test_kafka_connector_matches_pyflink_minor():
    pyflink = _pin(REPO_ROOT / "requirements/flink.txt", "apache-flink")
    pom = (REPO_ROOT / "jvm/pom.xml").read_text()
    connector = re.search(r"<flink.kafka.connector.version>(\S+)</", pom).group(1)
    flink = re.search(r"<flink.version>(\S+)</", pom).group(1)
    assert flink == pyflink, f"jvm/pom.xml flink.version {flink} != apache-flink {pyflink}"
    assert connector.endswith("-" + ".".join(pyflink.split(".")[:2])), (connector, pyflink)


def test_fetched_connector_jar_is_the_pinned_one():
    pom = (REPO_ROOT / "jvm/pom.xml").read_text()
    connector = re.search(r"<flink.kafka.connector.version>(\S+)</", pom).group(1)
    jars = [p.name for p in (REPO_ROOT / "build/jvm/flink-lib").glob("flink-sql-connector-kafka-*.jar")]
    assert jars == [f"flink-sql-connector-kafka-{connector}.jar"]


def test_every_python_pin_is_exact():
    for lock in [REPO_ROOT / "requirements.txt", *sorted((REPO_ROOT / "requirements").glob("*.txt"))]:
        for line in lock.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                assert "==" in line, f"{lock.name}: unpinned requirement {line!r}"
