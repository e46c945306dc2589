"""The real Flink cluster runs a PyFlink job (thread mode) reading and writing Kafka through
the connector fetched from Maven Central; its REST API and web UI let in only the login (the
`flink` CLI submits through the same door)."""

import json
import uuid

import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from flywheel import flinkjobs
from flywheel.config import REPO_ROOT
from flywheel.hdfs import webhdfs
from flywheel.secrets import flink_auth, kafka_args

pytestmark = pytest.mark.integration


def test_pyflink_job_reads_one_topic_and_writes_another(stack):
    src, dst = f"it-src-{uuid.uuid4().hex[:6]}", f"it-dst-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(src, 2, 1), NewTopic(dst, 2, 1)])
    admin.close()
    producer = KafkaProducer(**kafka_args(stack))
    for i in range(120):
        producer.send(src, key=str(i).encode(), value=json.dumps({"i": i}).encode())
    producer.send(src, key=b"bad", value=b"not json")
    producer.flush()

    job = flinkjobs.submit(stack, REPO_ROOT / "streaming/jobs/passthrough.py", [
        *flinkjobs.kafka_argv(stack), "--source", src, "--sink", dst,
        "--start-offsets", json.dumps({"0": 0, "1": 0}),
    ])
    final = flinkjobs.wait(stack, job, timeout_s=240)
    assert final == "FINISHED", flinkjobs.exceptions(stack, job)

    consumer = KafkaConsumer(dst, **kafka_args(stack),
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    out = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert sorted(r["i"] for r in out if "i" in r) == list(range(120))
    assert all(r["via"] == "flink" for r in out)
    assert {"malformed": "not json", "via": "flink"} in out


def test_streaming_job_checkpoints_rocksdb_state_to_hdfs(stack):
    topic = f"it-ckpt-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(**kafka_args(stack))
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    job = flinkjobs.submit(stack, REPO_ROOT / "streaming/jobs/passthrough.py", [
        *flinkjobs.kafka_argv(stack), "--source", topic, "--sink", topic + "-out",
        "--start-offsets", json.dumps({"0": 0}), "--unbounded",
    ])
    try:
        flinkjobs.wait(stack, job, until={"RUNNING"}, timeout_s=120)
        completed = flinkjobs.wait_for_checkpoint(stack, job, timeout_s=120)
        config = requests.get(f"{stack.flink_url}/jobs/{job}/checkpoints/config", auth=flink_auth(stack), timeout=5).json()
        # checked while the job runs: Flink deletes a cancelled job's checkpoints
        chk = completed["external_path"].removeprefix(stack.hdfs_uri)
        assert webhdfs(stack).exists(f"{chk}/_metadata")
    finally:
        flinkjobs.cancel(stack, job)
    assert "RocksDB" in config["state_backend"], config
    assert completed["external_path"].startswith(f"{stack.hdfs_uri}{stack.flink.checkpoint_dir}/{job}/chk-")


def test_cluster_runs_python_in_thread_mode_on_loopback(stack):
    got = requests.get(f"{stack.flink_url}/jobmanager/config", auth=flink_auth(stack), timeout=5)
    conf = {e["key"]: e["value"] for e in got.json()}
    assert conf["python.execution-mode"] == "thread"
    assert conf["state.backend.type"] == "rocksdb"
    for key in ("jobmanager.bind-host", "taskmanager.bind-host", "rest.bind-address"):
        assert conf[key] == "127.0.0.1", key


def test_the_door_refuses_a_request_without_the_login_or_with_a_wrong_password(stack):
    assert stack.flink.require_login, "the test stack runs Flink's REST API behind its door (the default)"
    user, password = flink_auth(stack)
    for auth in (None, (user, "not-the-password"), ("someone", password)):
        got = requests.get(f"{stack.flink_url}/jobs/overview", auth=auth, timeout=10)
        assert got.status_code == 401 and "jobs" not in got.text, (auth and auth[0], got.status_code)
        assert got.headers.get("WWW-Authenticate", "").startswith("Basic"), got.headers  # a browser asks for it
    assert requests.get(f"{stack.flink_url}/jobs/overview", auth=(user, password), timeout=10).json()["jobs"] is not None
    # the JobManager's own port answers only on loopback, and the door is the port clients are given
    conf = {e["key"]: e["value"] for e in
            requests.get(f"{stack.flink_url}/jobmanager/config", auth=(user, password), timeout=5).json()}
    assert (conf["rest.bind-address"], conf["rest.bind-port"]) == ("127.0.0.1", str(stack.flink.rest_backend_port))


def _peer(host: str, port: int, key_pem=None) -> str:
    """What a TLS client gets from ``host:port``: "refused" (a failed handshake, an alert, a reset
    or a closed connection) or "accepted" (a handshake, then the server waits for the protocol)."""
    import socket
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if key_pem:
        ctx.load_cert_chain(key_pem)
    try:
        with socket.create_connection((host, port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
            tls.settimeout(2)  # TLS 1.3: a server that wants a client certificate says so after the handshake
            return "refused" if tls.recv(1) == b"" else "accepted"
    except (TimeoutError, socket.timeout):
        return "accepted"
    except (ssl.SSLError, ConnectionError):
        return "refused"


def _cluster_key_pem(stack, folder) -> str:
    """The cluster's internal key and certificate (PKCS12) as one PEM file, for Python's ssl."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from flywheel.secrets import FLINK_INTERNAL_PASSWORD, value
    from flywheel.stack import flink_tls

    key, cert, _ = pkcs12.load_key_and_certificates(flink_tls.keystore(stack).read_bytes(),
                                                    value(stack, FLINK_INTERNAL_PASSWORD).encode())
    path = folder / "internal.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_the_clusters_own_ports_refuse_a_peer_without_its_key(stack, tmp_path):
    f = stack.flink
    if not f.internal_tls:
        pytest.skip("flink.internal_tls is off in this config")
    host = stack.stack.host
    ports = {"jobmanager rpc": f.jobmanager_rpc_port, "taskmanager rpc": f.taskmanager_rpc_port,
             "blob server": f.blob_port, "taskmanager data": f.taskmanager_data_port,
             # the JobManager's and the TaskManager's metrics query services (Pekko too)
             "metrics query": f.metrics_query_port, "metrics query +1": f.metrics_query_port + 1}
    assert {name: _peer(host, port) for name, port in ports.items()} == {name: "refused" for name in ports}
    # the same ports let a peer holding the cluster's key through the handshake (so the refusal
    # above is TLS asking for the key, not a plain port hanging up on a TLS hello)
    key = _cluster_key_pem(stack, tmp_path)
    assert {name: _peer(host, port, key) for name, port in ports.items()} == {name: "accepted" for name in ports}
