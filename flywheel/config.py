"""Typed configuration: one YAML file parsed into pydantic models, overridable by env.

Load order (later wins):
  1. ``config/flywheel.yaml`` in the repository;
  2. each file named in ``FLYWHEEL_CONFIG`` (``:``-separated), deep-merged on top;
  3. environment variables ``FLYWHEEL__<SECTION>__<KEY>=value`` (values parsed as YAML,
     so ``FLYWHEEL__FLINK__PARALLELISM=1`` is an int).

A wrong value fails fast with :class:`ConfigError`, naming the key, the bad value, the
file it came from and what to do.

Example::

    from flywheel.config import load_config
    cfg = load_config()
    cfg.kafka.bootstrap  # '127.0.0.1:9092'
"""

from __future__ import annotations

import functools
import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO_ROOT / "config" / "flywheel.yaml"
ENV_PREFIX = "FLYWHEEL__"

Port = int


class ConfigError(ValueError):
    """A configuration value is missing, mistyped or out of range."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _task_rates(rates: dict[str, float]) -> dict[str, float]:
    """Per-task negative rates: known tasks, each rate in (0, 1]."""
    from streaming.sampling import check_rates
    from streaming.schemas import TASKS

    if unknown := sorted(set(rates) - set(TASKS)):
        raise ValueError(f"unknown tasks {unknown}; tasks are {', '.join(TASKS)}")
    return check_rates(rates) if rates else rates


def _check_port(value: int) -> int:
    if not 1024 <= value <= 65535:
        raise ValueError(f"port {value} is outside 1024..65535 (unprivileged ports only)")
    return value


class HostsConfig(_Section):
    """The name each service is dialled by; None means ``stack.host``. On one machine all stay
    None; in containers they are the compose service names (config/docker.yaml)."""

    paramserver_training: str | None = None
    paramserver_serving: str | None = None
    kafka: str | None = None
    kdc: str | None = None
    hdfs_namenode: str | None = None
    hdfs_datanode: str | None = None
    flink_jobmanager: str | None = None
    flink_taskmanager: str | None = None  # "" lets each TaskManager advertise its own address
    mlflow: str | None = None
    airflow: str | None = None


class StackConfig(_Section):
    host: str = "127.0.0.1"
    bind_host: str | None = None
    hosts: HostsConfig = HostsConfig()
    state_dir: Path = Path(".flywheel")
    startup_timeout_s: float = Field(180, gt=0)
    background_nice: int = Field(10, ge=0, le=19)  # CPU niceness of programs off the feed path

    @field_validator("host", "bind_host")
    @classmethod
    def _host_is_ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v

    @property
    def bind(self) -> str:
        """The address every daemon listens on (``bind_host``, else ``host``)."""
        return self.bind_host or self.host

    def host_of(self, service: str) -> str:
        """The name ``service`` (a field of :class:`HostsConfig`) is dialled by."""
        name = getattr(self.hosts, service)
        return self.host if name is None else name

    @property
    def root(self) -> Path:
        """Absolute state dir: data and logs of every service."""
        p = self.state_dir if self.state_dir.is_absolute() else REPO_ROOT / self.state_dir
        return p.resolve()

    @property
    def logs(self) -> Path:
        return self.root / "logs"


class TopicConfig(_Section):
    partitions: int = Field(2, ge=1)
    retention_hours: float = Field(168, gt=0)


class KafkaConfig(_Section):
    port: Port = 9092
    controller_port: Port = 9093
    heap: str = "512m"
    num_partitions: int = Field(2, ge=1)
    topics: dict[str, TopicConfig] = Field(default_factory=dict)
    sasl: bool = True  # clients (and the controller) log in with SASL/PLAIN as `user`
    user: str = Field("flywheel", pattern=r"^[A-Za-z0-9_.-]+$")  # password: flywheel/secrets.py KAFKA_PASSWORD
    tls: bool = True  # both listeners speak TLS (flywheel/stack/kafka_tls.py); clients verify the broker
    # each component logs in as its own user, allowed only what it does (flywheel/stack/kafka_acls.py);
    # `user` is the super user of the stack's own tools
    acls: bool = True

    _ports = field_validator("port", "controller_port")(_check_port)

    @field_validator("user")
    @classmethod
    def _user_is_no_role(cls, v: str) -> str:
        from flywheel.secrets import KAFKA_ROLES

        if v in KAFKA_ROLES:
            raise ValueError(f"kafka.user {v!r} is the name of a component's own login ({', '.join(KAFKA_ROLES)}): "
                             "choose another name for the stack's super user")
        return v

    @model_validator(mode="after")
    def _acls_need_logins(self) -> KafkaConfig:
        if self.acls and not self.sasl:
            raise ValueError("kafka.acls needs kafka.sasl: without logins every client is the same anonymous user "
                             "(set kafka.acls: false too)")
        return self

    @property
    def security_protocol(self) -> str:
        """Kafka's name for what the listeners speak: (SASL_)PLAINTEXT or (SASL_)SSL."""
        return f"{'SASL_' if self.sasl else ''}{'SSL' if self.tls else 'PLAINTEXT'}"


class KerberosConfig(_Section):
    """The stack's Kerberos realm (MIT krb5kdc from Debian, flywheel/stack/kerberos.py): HDFS's
    door. With ``enabled`` every HDFS client proves who it is (RPC: SASL/GSSAPI; WebHDFS and
    the web UI: SPNEGO over TLS) and the DataNode authenticates block transfers."""

    enabled: bool = True
    realm: str = Field("FLYWHEEL.LOCAL", pattern=r"^[A-Z0-9][A-Z0-9.-]*$")
    port: Port = 7088  # the KDC, TCP and UDP
    # the principal of every HDFS client of the stack (docker/compose.yaml mounts its keytab's
    # folder by this name: change both)
    client: str = Field("flywheel", pattern=r"^[a-z][a-z0-9_-]*$")

    _ports = field_validator("port")(_check_port)

    @field_validator("client")
    @classmethod
    def _not_a_daemon(cls, v: str) -> str:
        if v in ("hdfs", "HTTP"):
            raise ValueError(f"'{v}' names the HDFS daemons' principals; choose another client name")
        return v


class HdfsConfig(_Section):
    namenode_port: Port = 8020
    namenode_http_port: Port = 9870
    datanode_port: Port = 9866
    datanode_http_port: Port = 9864
    datanode_ipc_port: Port = 9867
    heap: str = "256m"
    replication: int = Field(1, ge=1)
    root: str = "/flywheel"
    # with kerberos.enabled: what SASL adds to RPC (hadoop.rpc.protection) and to block transfers
    # (dfs.data.transfer.protection); "privacy" encrypts both, at a CPU cost
    protection: Literal["authentication", "integrity", "privacy"] = "authentication"

    _ports = field_validator(
        "namenode_port", "namenode_http_port", "datanode_port", "datanode_http_port",
        "datanode_ipc_port",
    )(_check_port)


class FlinkConfig(_Section):
    rest_port: Port = 8081  # the REST API and web UI, for clients: the door (Caddy, basic auth) when require_login
    rest_backend_port: Port = 8091  # the JobManager's own REST listener, on loopback behind the door
    require_login: bool = True
    user: str = Field("flywheel", pattern=r"^[A-Za-z0-9_.-]+$")  # password: flywheel/secrets.py FLINK_PASSWORD
    # mutual TLS on the cluster's own connections (RPC, blob server, data exchange): only holders of
    # the cluster's key (<state>/flink/tls, password FLINK_INTERNAL_PASSWORD) join it
    internal_tls: bool = True
    jobmanager_rpc_port: Port = 6123
    taskmanager_rpc_port: Port = 6122
    taskmanager_data_port: Port = 6121
    blob_port: Port = 6124
    metrics_query_port: Port = 6125
    jobmanager_memory: str = "768m"
    taskmanager_memory: str = "1536m"
    task_slots: int = Field(2, ge=1)
    parallelism: int = Field(2, ge=1)
    checkpoint_interval_s: float = Field(30, gt=0)
    checkpoint_dir: str = "/flywheel/flink/checkpoints"
    savepoint_dir: str = "/flywheel/flink/savepoints"

    _ports = field_validator(
        "rest_port", "rest_backend_port", "jobmanager_rpc_port", "taskmanager_rpc_port", "taskmanager_data_port",
        "blob_port", "metrics_query_port",
    )(_check_port)


class MlflowConfig(_Section):
    port: Port = 5000
    backend_store_uri: str | None = None
    artifacts_dir: Path | None = None
    workers: int = Field(1, ge=1)
    admin_user: str = "admin"  # basic auth is always on; password: flywheel/secrets.py
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = "READ"  # of other users on a resource

    _ports = field_validator("port")(_check_port)


class AirflowConfig(_Section):
    port: Port = 8080
    parallelism: int = Field(4, ge=1)
    max_active_tasks_per_dag: int = Field(2, ge=1)
    admin_user: str = "admin"
    users: dict[str, Literal["viewer", "user", "op", "admin"]] = {}  # more logins: name -> role; passwords generated
    dags_dir: Path = Path("dags")

    _ports = field_validator("port")(_check_port)


class PsTableConfig(_Section):
    """One embedding table held by the parameter servers (see paramserver.config.TableConfig)."""

    dim: int = Field(ge=1, le=65536)
    optimizer: str = "adagrad"
    learning_rate: float = Field(0.05, gt=0)
    initializer: str = "uniform"
    init_scale: float = 0.05
    admit_after: int = Field(1, ge=1)
    ttl_seconds: int = Field(0, ge=0)
    expected_rows: int = Field(0, ge=0)

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        if v not in ("sgd", "adagrad", "ftrl"):
            raise ValueError(f"unknown optimizer {v!r}: use sgd, adagrad or ftrl")
        return v


class ParamServerConfig(_Section):
    """Training and serving parameter servers: shard i of the training PS listens on
    ``training_port + i``, of the serving PS on ``serving_port + i``."""

    shards: int = Field(1, ge=1, le=64)
    training_port: Port = 7100
    serving_port: Port = 7200
    metrics_port: Port = 7300  # Prometheus: training shard i at metrics_port + i, serving at + 64 + i
    sync_interval_s: float = Field(2.0, gt=0, le=5)
    deltas_topic: str = "ps-deltas"
    snapshot_dir: str = "/flywheel/paramserver/snapshots"  # on HDFS
    snapshot_keep: int = Field(24, ge=1)  # newest complete snapshots kept whatever their age
    snapshot_max_age_days: float = Field(7, gt=0)  # younger snapshots are kept whatever their rank
    rpc_timeout_s: float = Field(5.0, gt=0)
    rpc_retries: int = Field(3, ge=0)
    # every Flight RPC must carry the bearer token FLYWHEEL_PS_TOKEN (flywheel/secrets.py)
    require_token: bool = True
    tables: dict[str, PsTableConfig] = Field(default_factory=dict)

    _ports = field_validator("training_port", "serving_port", "metrics_port")(_check_port)

    def port(self, role: str, shard: int) -> int:
        """Port of shard ``shard`` of the ``training`` or ``serving`` PS."""
        return (self.training_port if role == "training" else self.serving_port) + shard

    def metrics_port_of(self, role: str, shard: int) -> int:
        """Prometheus port of shard ``shard`` of the ``training`` or ``serving`` PS."""
        return self.metrics_port + (0 if role == "training" else 64) + shard


class JoinerConfig(_Section):
    """The streaming joiner job (streaming/jobs/joiner.py): topics come from ``kafka.topics``."""

    features_topic: str = "features"
    actions_topic: str = "actions"
    examples_topic: str = "examples"
    dead_letter_topic: str = "dead-letter"
    label_window_s: float = Field(1800, gt=0)  # no action this long after serving: a negative
    retention_days: float = Field(7, gt=0)  # an action this late (event time) still joins
    negative_rate: float = Field(0.1, gt=0, le=1)  # share of negatives kept; written on each example
    negative_rates: dict[str, float] = {}  # per-task overrides of negative_rate (task -> 0 < r <= 1)

    _rates = field_validator("negative_rates")(lambda cls, v: _task_rates(v))
    out_of_orderness_s: float = Field(5, ge=0)
    idle_timeout_s: float = Field(30, gt=0)
    delivery: str = Field("exactly-once", pattern="^(exactly-once|at-least-once)$")
    parallelism: int = Field(0, ge=0)  # 0: flink.parallelism
    group: str = "flywheel-joiner"  # consumer group, prefix of transactional ids
    examples_dir: str = "/flywheel/examples"  # on HDFS: hourly Parquet (empty: do not land)
    land_lateness_s: int = Field(60, ge=0)
    keep_interval_s: float = Field(5, gt=0)  # the keeper checks the joiner runs this often
    keep_grace_s: float = Field(20, ge=0)  # ... and resubmits it when it has been gone this long


ARMS = ("champion", "popularity")  # the arms of the online A/B test (serving/arms.py)


def check_traffic(shares: dict[str, float]) -> dict[str, float]:
    """``serving.traffic``: known arms, shares >= 0 summing to 1; raises ValueError saying which."""
    unknown = sorted(set(shares) - set(ARMS))
    if unknown:
        raise ValueError(f"serving.traffic: unknown arm(s) {unknown}; the arms are {list(ARMS)}")
    if any(v < 0 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
        raise ValueError(f"serving.traffic: shares {shares} must be >= 0 and sum to 1 (an overlay merges with "
                         "config/flywheel.yaml's arms: give every arm, e.g. popularity: 0)")
    return shares


class ServingConfig(_Section):
    """The model server (serving/app.py): the feed API and the event collector."""

    port: Port = 8000
    catalogue: str | None = None  # a history folder (datasets/): titles, item and user attributes (None: IDs only)
    candidates: int = Field(200, ge=1, le=5000)  # retrieved per request, then ranked
    # the candidates' rows (items, genres) are cached in the model server and re-pulled this
    # often (serving/candidate_rows.py): a feed then costs one serving-PS call; 0: pulled per feed
    candidate_rows_refresh_s: float = Field(1.0, ge=0, le=60)
    # the dense graphs' serving pass: numpy (serving/forward.py, checked against TensorFlow on a
    # version's first feed) or tensorflow
    forward: Literal["numpy", "tensorflow"] = "numpy"
    max_k: int = Field(100, ge=1, le=1000)  # largest feed a request may ask for
    require_api_key: bool = False  # /feed, /events, /demo/api need X-API-Key (flywheel/secrets.py); on off loopback
    feed_workers: int = Field(2, ge=1)  # threads computing feeds, in arrival order (the GIL: few is faster)
    max_inflight_feeds: int = Field(16, ge=1)  # feeds computing or waiting for a worker; more are shed (503)
    tf_threads: int = Field(1, ge=1)  # TensorFlow's intra-/inter-op and BLAS's threads in the model server
    task_weights: dict[str, float] = {"click": 1.0, "like": 1.0, "finish": 0.5}  # feed score = sum w * p(task)
    max_events: int = Field(500, ge=1)  # actions per POST /events
    max_body_bytes: int = Field(1_048_576, ge=1024)  # larger request bodies get 413
    # POST /events waits this long for Kafka's ack, then answers 503; the producer gives unsent
    # records up by then too (delivery_timeout_ms), so a 503 means "not written", bar a lost ack
    events_ack_timeout_s: float = Field(10, ge=1, le=120)
    history: int = Field(10, ge=0)  # recent items per user kept for the history slot
    reload_interval_s: float = Field(10, gt=0)  # how often the champion alias is checked
    features_topic: str = "features"
    features_linger_ms: int = Field(50, ge=0, le=1000)  # batching of served features to Kafka
    actions_topic: str = "actions"
    # the online A/B test (serving/arms.py): arm -> share of users; arms: champion, popularity
    traffic: dict[str, float] = {"champion": 1.0}
    traffic_salt: str = "flywheel-ab"  # a new salt reshuffles users into arms (a new experiment)

    _port = field_validator("port")(_check_port)

    _traffic = field_validator("traffic")(lambda cls, v: check_traffic(v))


class OnlineConfig(_Section):
    """The online trainer (``flywheel online-train``): examples from Kafka -> the training PS."""

    batch_size: int = Field(1024, ge=1)
    snapshot_every: int = Field(50_000, ge=100)  # examples between snapshots (with offsets)
    train_dense: bool = False  # False: embeddings only, against the champion's dense graph
    window: int = Field(20_000, ge=100)  # examples in the rolling (progressive) AUC
    log_every_s: float = Field(30, gt=0)  # MLflow metrics period
    experiment: str = "online-training"
    metrics_port: Port = 9300  # Prometheus /metrics of the trainer (stack.host)
    group: str = "flywheel-online-trainer"  # Kafka group its offsets are committed to (monitoring only)
    step_scale: Literal["batch", "mean"] = "batch"  # batch: rows move per example as in the retrain
    personal_tables: list[str] = ["user_id"]  # ...except these (one user's rows): each batch's mean step
    # fnw: fake negative weighting (pipelines/online/delayed.py; the joiner sends each impression at
    # once as a provisional negative); wait: train the joiner's final examples as they come
    delayed_feedback: Literal["fnw", "wait"] = "fnw"

    _port = field_validator("metrics_port")(_check_port)


class SimulatorConfig(_Section):
    """The user simulator (``flywheel simulate``, simulator/): a history's held-out events replayed as
    users of the model server at ``stack.host:serving.port``."""

    data: str | None = None  # a history folder (None: pass --data)
    holdout: float = Field(0.2, gt=0, lt=1)  # the latest share of ratings (by time) replayed as sessions
    speedup: float = Field(0, ge=0)  # event-time gaps are divided by this; 0: as fast as `rate` allows
    rate: float = Field(5, gt=0)  # at most this many feed requests per second
    k: int = Field(10, ge=1, le=1000)  # items per feed (<= serving.max_k)
    base_click_rate: float = Field(0.07, gt=0, lt=1)  # p(click) on an unrated item of average taste
    late_share: float = Field(0.05, ge=0, le=1)  # share of actions posted late, with their event time
    late_delay_s: float = Field(60, ge=0)  # how late
    drift_after_s: float | None = Field(None, ge=0)  # tastes drift this long into a run (None: never)
    seed: int = 0  # of the users' choices, late actions and drift
    timeout_s: float = Field(5, gt=0)  # per HTTP request
    max_backoff_s: float = Field(30, gt=0)  # longest wait between retries (no model, server down)
    metrics_port: Port = 9400  # Prometheus /metrics of the simulator (stack.bind)
    probe_every_s: float = Field(10, ge=0)  # freshness probe period (simulator/freshness.py); 0: off

    _port = field_validator("metrics_port")(_check_port)


class SyntheticConfig(_Section):
    """The synthetic world's size (``datasets.synthetic.world``): the default data offline."""

    users: int = Field(600, ge=1)
    items: int = Field(1000, ge=1)
    days: float = Field(30, gt=0)  # of sessions; items keep arriving over them
    seed: int = 0


class DataConfig(_Section):
    """The interaction history (datasets/): where it is, how its actions map to tasks.

    ``path`` null means the default data: MovieLens 100K fetched from GroupLens with pinned
    checksums, else (offline) the seeded synthetic world, cached under ``cache``.
    """

    path: str | None = None  # a contract folder, a MovieLens release or a Taobao UserBehavior log (null: default)
    format: str = Field("auto", pattern="^(auto|contract|movielens|retail)$")
    source: str = Field("auto", pattern="^(auto|movielens|synthetic)$")  # the default data when path is null
    cache: Path = REPO_ROOT / ".flywheel-data"  # fetched and generated default data (kept by make clean)
    actions: dict[str, list[str]] = {}  # action name -> tasks it is a positive for ({}: datasets.contract.DEFAULT_ACTIONS)
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("actions")
    @classmethod
    def _known_tasks(cls, actions: dict[str, list[str]]) -> dict[str, list[str]]:
        from streaming.schemas import TASKS

        for action, tasks in actions.items():
            if unknown := sorted(set(tasks) - set(TASKS)):
                raise ValueError(f"action {action!r} maps to unknown tasks {unknown}; tasks are {', '.join(TASKS)}")
        return actions


class SparkConfig(_Section):
    master: str = "local[2]"
    driver_memory: str = "1g"


class BatchConfig(_Section):
    """Daily retrain (pipelines/batch, the ``daily_retrain`` DAG): sampling, training, publishing."""

    schedule: str | None = "@daily"  # of the daily_retrain DAG (cron or preset; null: only triggered)
    training_dir: str = "/flywheel/training"  # on HDFS: the sampled training set, dt= partitions
    negative_rate: float = Field(0.25, gt=0, le=1)  # batch down-sampling of negatives, on top of the joiner's
    negative_rates: dict[str, float] = {}  # per-task overrides (task -> 0 < r <= 1)
    retrieval_negatives: int = Field(5, ge=0)  # popularity-drawn negatives per click
    train_days: int = Field(7, ge=1)  # days before the evaluation day that train
    epochs: int = Field(1, ge=1, le=100)
    batch_size: int = Field(512, ge=8)
    experiment: str = "daily-retrain"  # MLflow experiment
    model_name: str = "flywheel"  # MLflow registered model; the published one has alias "champion"
    gate_metric: str = "auc_click"  # a candidate must beat the champion and popularity on this, same day
    recall_k: int = Field(50, ge=1)
    popular_window_h: float = Field(24, gt=0)  # the popularity baseline: most clicked in this trailing window
    ease_max_items: int = Field(10_000, ge=1)  # the EASE baseline is left out above this catalogue size (~2.4 GB at 10 K)
    dr_depth: int = Field(2, ge=1)
    dr_width: int = Field(16, ge=2)
    dr_beam: int = Field(14, ge=1)
    dr_paths_per_item: int = Field(3, ge=1)
    dr_alpha: float = Field(1e-3, ge=0)
    dr_prior_weight: float = Field(1.0, ge=0)  # the popularity prior (beam and reranker): w * log(1 + recent clicks)
    dr_learning_rate: float = Field(5e-3, gt=0)  # Adam's, for Deep Retrieval and its user tower
    seed: int = 0

    _rates = field_validator("negative_rates")(lambda cls, v: _task_rates(v))


class HealthConfig(_Section):
    """Thresholds of the stream health checks (flywheel/health.py, the ``stream_health`` DAG)."""

    max_lag_records: int = Field(1_000_000, ge=0)  # per consumer group, summed over its partitions
    max_example_age_s: float = Field(900, gt=0)  # the newest committed example may be this old
    timeout_s: float = Field(10, gt=0)  # per Kafka or Flink request


class FlywheelConfig(_Section):
    stack: StackConfig = StackConfig()
    kafka: KafkaConfig = KafkaConfig()
    kerberos: KerberosConfig = KerberosConfig()
    hdfs: HdfsConfig = HdfsConfig()
    flink: FlinkConfig = FlinkConfig()
    mlflow: MlflowConfig = MlflowConfig()
    airflow: AirflowConfig = AirflowConfig()
    spark: SparkConfig = SparkConfig()
    serving: ServingConfig = ServingConfig()
    online: OnlineConfig = OnlineConfig()
    batch: BatchConfig = BatchConfig()
    paramserver: ParamServerConfig = ParamServerConfig()
    joiner: JoinerConfig = JoinerConfig()
    health: HealthConfig = HealthConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    data: DataConfig = DataConfig()

    # -- derived addresses, so no caller formats a URL by hand ------------------------------
    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.stack.host_of('kafka')}:{self.kafka.port}"

    @property
    def hdfs_uri(self) -> str:
        return f"hdfs://{self.stack.host_of('hdfs_namenode')}:{self.hdfs.namenode_port}"

    @property
    def webhdfs_url(self) -> str:
        """The NameNode's web UI and WebHDFS: TLS only (and SPNEGO) with kerberos.enabled."""
        scheme = "https" if self.kerberos.enabled else "http"
        return f"{scheme}://{self.stack.host_of('hdfs_namenode')}:{self.hdfs.namenode_http_port}"

    @property
    def flink_url(self) -> str:
        return f"http://{self.stack.host_of('flink_jobmanager')}:{self.flink.rest_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.stack.host_of('mlflow')}:{self.mlflow.port}"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.stack.host_of('airflow')}:{self.airflow.port}"

    @property
    def mlflow_backend_uri(self) -> str:
        return self.mlflow.backend_store_uri or f"sqlite:///{self.stack.root / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.mlflow.artifacts_dir or self.stack.root / "mlflow" / "artifacts"

    def all_ports(self) -> dict[str, int]:
        """Every port the stack listens on, by ``section.key``."""
        out: dict[str, int] = {}
        for name in ("kafka", "kerberos", "hdfs", "flink", "mlflow", "airflow", "paramserver", "serving", "online",
                     "simulator"):
            section = getattr(self, name)
            for key, value in section.model_dump().items():
                if key == "port" or key.endswith("_port"):
                    out[f"{name}.{key}"] = value
        for shard in range(1, self.paramserver.shards):  # shard i listens on <port> + i
            for key in ("training_port", "serving_port"):
                out[f"paramserver.{key}+{shard}"] = getattr(self.paramserver, key) + shard
        return out


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; fix FLYWHEEL_CONFIG or create it") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
        if not keys:
            continue
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        try:
            node[keys[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[keys[-1]] = raw
    return out


def load_config(
    files: list[Path] | None = None, environ: dict[str, str] | None = None
) -> FlywheelConfig:
    """Read the config: defaults file, overlay files, then env overrides.

    Args:
      files: overlay files; default: those in ``FLYWHEEL_CONFIG``.
      environ: the environment to read overrides from; default ``os.environ``.

    Raises:
      ConfigError: a file is missing or malformed, or a value is invalid.
    """
    environ = dict(os.environ if environ is None else environ)
    if files is None:
        files = [Path(p) for p in environ.get("FLYWHEEL_CONFIG", "").split(":") if p]
    files = [p if p.is_absolute() else REPO_ROOT / p for p in files]
    sources = [DEFAULT_FILE, *files]
    data: dict[str, Any] = {}
    for path in sources:
        data = deep_merge(data, _read_yaml(path))
    data = deep_merge(data, _env_overrides(environ))
    try:
        cfg = FlywheelConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            env = ENV_PREFIX + "__".join(str(p).upper() for p in err["loc"])
            problems.append(f"  {where} = {err.get('input')!r}: {err['msg']} (set it in {sources[-1].name} or {env})")
        raise ConfigError(
            "invalid Flywheel configuration (read from "
            + ", ".join(str(p) for p in sources) + "):\n" + "\n".join(problems)
        ) from None
    _check_unique_ports(cfg)
    _check_doors(cfg)
    return cfg


def _check_doors(cfg: FlywheelConfig) -> None:
    """The model server takes anyone's feeds and events only on a loopback address."""
    if not ipaddress.ip_address(cfg.stack.bind).is_loopback and not cfg.serving.require_api_key:
        raise ConfigError(f"stack.bind is {cfg.stack.bind}, so the model server's /feed and /events would take "
                          "requests from anyone who can reach it: set serving.require_api_key: true "
                          "(the key: FLYWHEEL_API_KEY, or the state dir's secrets file) or bind a loopback address")


def _check_unique_ports(cfg: FlywheelConfig) -> None:
    seen: dict[int, str] = {}
    for key, port in cfg.all_ports().items():
        if port in seen:
            raise ConfigError(f"port {port} is given to both {seen[port]} and {key}; give each service its own port")
        seen[port] = key


@functools.lru_cache(maxsize=1)
def config() -> FlywheelConfig:
    """The process-wide config, read once."""
    return load_config()
