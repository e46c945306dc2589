"""The stack's secrets: each comes from its environment variable, else from a file in the
state dir (``<stack.root>/secrets/<name>``, mode 0600, generated on first use; the state dir
is never committed). ``flywheel status`` says where each one came from, never its value.

The MLflow login (``mlflow.admin_user``) is handed to MLflow's client through its own
variables, ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``: :func:`mlflow_login`
sets them in this process; :func:`tracking_uri` is what every MLflow client is given.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flywheel.config import FlywheelConfig


@dataclass(frozen=True)
class Secret:
    name: str  # the file's name in <stack.root>/secrets/
    env: str  # the environment variable that overrides the file
    protects: str


MLFLOW_PASSWORD = Secret("mlflow_admin_password", "FLYWHEEL_MLFLOW_PASSWORD",
                         "MLflow login of mlflow.admin_user (fixed at the server's first start)")
MLFLOW_SECRET_KEY = Secret("mlflow_flask_secret_key", "FLYWHEEL_MLFLOW_SECRET_KEY",
                           "MLflow server's CSRF/session signing key")
API_KEY = Secret("serving_api_key", "FLYWHEEL_API_KEY",
                 "X-API-Key of the model server's /feed, /events and /demo/api (serving.require_api_key)")
PS_TOKEN = Secret("paramserver_token", "FLYWHEEL_PS_TOKEN",
                  "bearer token of the parameter servers' Flight RPCs (paramserver.require_token)")
KAFKA_PASSWORD = Secret("kafka_password", "FLYWHEEL_KAFKA_PASSWORD",
                        "SASL/PLAIN login of kafka.user at the Kafka broker and controller (kafka.sasl)")
FLINK_PASSWORD = Secret("flink_password", "FLYWHEEL_FLINK_PASSWORD",
                        "HTTP basic-auth login of flink.user at the Flink REST API and web UI (flink.require_login)")
HDFS_KEYSTORE_PASSWORD = Secret("hdfs_keystore_password", "FLYWHEEL_HDFS_KEYSTORE_PASSWORD",
                                "HDFS's TLS keystore and truststore (kerberos.enabled; fixed when they are made)")
HDFS_HTTP_SECRET = Secret("hdfs_http_secret", "FLYWHEEL_HDFS_HTTP_SECRET",
                          "HDFS web servers' signing key of their SPNEGO cookies (kerberos.enabled)")
KAFKA_KEYSTORE_PASSWORD = Secret("kafka_keystore_password", "FLYWHEEL_KAFKA_KEYSTORE_PASSWORD",
                                 "Kafka's TLS keystore and truststore (kafka.tls; fixed when they are made)")
FLINK_INTERNAL_PASSWORD = Secret("flink_internal_password", "FLYWHEEL_FLINK_INTERNAL_PASSWORD",
                                 "Flink's internal TLS keystore: the key of the JobManager and TaskManagers (flink.internal_tls)")
# the components' own Kafka logins (kafka.acls; what each may do: flywheel/stack/kafka_acls.py)
KAFKA_ROLES = ("serving", "joiner", "trainer", "paramserver", "monitor")
KAFKA_ROLE_PASSWORDS = {role: Secret(f"kafka_password_{role}", f"FLYWHEEL_KAFKA_PASSWORD_{role.upper()}",
                                     f"SASL/PLAIN login of the Kafka user {role!r} (kafka.acls)") for role in KAFKA_ROLES}
ALL = (MLFLOW_PASSWORD, MLFLOW_SECRET_KEY, API_KEY, PS_TOKEN, KAFKA_PASSWORD, FLINK_PASSWORD,
       HDFS_KEYSTORE_PASSWORD, HDFS_HTTP_SECRET, FLINK_INTERNAL_PASSWORD, KAFKA_KEYSTORE_PASSWORD,
       *KAFKA_ROLE_PASSWORDS.values())


def folder(cfg: FlywheelConfig) -> Path:
    return cfg.stack.root / "secrets"


def value(cfg: FlywheelConfig, secret: Secret) -> str:
    """The secret: its environment variable when set and non-empty, else its file (created
    with a random value on first use)."""
    from_env = os.environ.get(secret.env)
    if from_env:
        return from_env
    path = folder(cfg) / secret.name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole under a private name, then linked into place: a process starting at the
        # same moment sees no file or the whole value, never an empty one
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{secret.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
            os.link(tmp, path)
        except FileExistsError:  # another process created it first: read theirs
            pass
        finally:
            os.unlink(tmp)
    text = path.read_text().strip()
    if not text:
        raise ValueError(f"{path} is empty: delete it to generate a new {secret.name}, or set {secret.env}")
    return text


def where(cfg: FlywheelConfig, secret: Secret) -> str:
    """Where :func:`value` takes the secret from (for ``flywheel status``)."""
    if os.environ.get(secret.env):
        return f"environment {secret.env}"
    path = folder(cfg) / secret.name
    return f"file {path}" if path.exists() else f"file {path} (created on first use; or set {secret.env})"


def mlflow_login(cfg: FlywheelConfig) -> tuple[str, str]:
    """(user, password) of ``cfg``'s MLflow server, also set as MLflow's client variables in
    this process (overwritten on each call: the login follows the config in use; to log in
    otherwise, set FLYWHEEL_MLFLOW_PASSWORD and mlflow.admin_user)."""
    user, password = cfg.mlflow.admin_user, value(cfg, MLFLOW_PASSWORD)
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    return user, password


def tracking_uri(cfg: FlywheelConfig) -> str:
    """``cfg.mlflow_url``, with this process logged in (:func:`mlflow_login`): what every
    MLflow client of Flywheel is given."""
    mlflow_login(cfg)
    return cfg.mlflow_url


def api_key(cfg: FlywheelConfig) -> str | None:
    """The model server's API key when ``serving.require_api_key`` is on, else None."""
    return value(cfg, API_KEY) if cfg.serving.require_api_key else None


def api_headers(cfg: FlywheelConfig) -> dict[str, str]:
    """The headers a client of the model server sends: ``X-API-Key`` when required, else none."""
    key = api_key(cfg)
    return {"X-API-Key": key} if key else {}


def ps_token(cfg: FlywheelConfig) -> str | None:
    """The parameter servers' token when ``paramserver.require_token`` is on, else None."""
    return value(cfg, PS_TOKEN) if cfg.paramserver.require_token else None


def properties_value(cfg: FlywheelConfig, secret: Secret) -> str:
    """The secret, checked to be safe in JAAS lines and Java properties files (which Java reads as
    ISO-8859-1, with backslash escapes)."""
    text = value(cfg, secret)
    if not text.isascii() or not text.isprintable() or any(c in text for c in '"\\'):
        raise ValueError(f"the {secret.name} ({where(cfg, secret)}) holds a quote, backslash, non-ASCII or "
                         "unprintable character: choose printable ASCII without quotes and backslashes")
    return text


def kafka_password(cfg: FlywheelConfig) -> str | None:
    """The Kafka super user's password (``kafka.user``) when ``kafka.sasl`` is on, else None."""
    return properties_value(cfg, KAFKA_PASSWORD) if cfg.kafka.sasl else None


def kafka_login(cfg: FlywheelConfig, role: str | None = None) -> tuple[str, str] | None:
    """(user, password) of ``role`` (one of KAFKA_ROLES; None: the stack's super user,
    ``kafka.user``) at Kafka; None without ``kafka.sasl``. Without ``kafka.acls`` every role logs
    in as ``kafka.user``."""
    if not cfg.kafka.sasl:
        return None
    if role is None or not cfg.kafka.acls:
        return cfg.kafka.user, kafka_password(cfg)
    if role not in KAFKA_ROLE_PASSWORDS:
        raise ValueError(f"no Kafka role {role!r}: the roles are {', '.join(KAFKA_ROLES)}")
    return role, properties_value(cfg, KAFKA_ROLE_PASSWORDS[role])


def kafka_user_password(cfg: FlywheelConfig, user: str) -> str:
    """The password of the Kafka login ``user`` (``kafka.user`` or, with ``kafka.acls``, a role);
    only that secret is read."""
    if user == cfg.kafka.user and cfg.kafka.sasl:
        return kafka_password(cfg)
    if cfg.kafka.sasl and cfg.kafka.acls and user in KAFKA_ROLE_PASSWORDS:
        return kafka_login(cfg, user)[1]
    raise ValueError(f"{user!r} is no Kafka login of this stack (kafka.user {cfg.kafka.user!r}"
                     f"{', and with kafka.acls: ' + ', '.join(KAFKA_ROLES) if cfg.kafka.acls else ''})")


def kafka_users(cfg: FlywheelConfig) -> dict[str, str]:
    """Every login the broker accepts (user -> password): ``kafka.user`` and, with ``kafka.acls``, each role."""
    roles = KAFKA_ROLES if cfg.kafka.acls else ()
    return dict(kafka_login(cfg, role) for role in (None, *roles)) if cfg.kafka.sasl else {}


def kafka_args(cfg: FlywheelConfig, role: str | None = None) -> dict:
    """What every kafka-python client of ``cfg``'s broker is given: the bootstrap address, the
    protocol, and, when ``kafka.sasl`` is on, the SASL/PLAIN login of ``role`` (a component:
    serving, joiner, trainer, paramserver, monitor; None: the stack's super user); when
    ``kafka.tls`` is on, the CA to verify the broker against
    (``KafkaProducer(**kafka_args(cfg, "serving"), ...)``)."""
    from flywheel.stack.kafka_tls import ca_pem

    args: dict = {"bootstrap_servers": cfg.kafka_bootstrap, "security_protocol": cfg.kafka.security_protocol}
    login = kafka_login(cfg, role)
    if login:
        args.update(sasl_mechanism="PLAIN", sasl_plain_username=login[0], sasl_plain_password=login[1])
    if cfg.kafka.tls:
        args.update(ssl_cafile=str(ca_pem(cfg)), ssl_check_hostname=True)
    return args


def jaas_plain(user: str, password: str, accept: dict[str, str] | None = None) -> str:
    """A JAAS line for SASL/PLAIN: the login of ``user``; with ``accept`` (user -> password) also
    the table of the users a broker accepts. The Flink jobs' line is
    streaming/jobs/kafka_login.py's (the connector's shaded module, built where flywheel's config
    is not importable)."""
    users = "".join(f' user_{name}="{secret}"' for name, secret in (accept or {}).items())
    module = "org.apache.kafka.common.security.plain.PlainLoginModule"
    return f'{module} required username="{user}" password="{password}"{users};'


def flink_auth(cfg: FlywheelConfig) -> tuple[str, str] | None:
    """The Flink REST API's login (``requests``' ``auth=``) when ``flink.require_login`` is on, else None."""
    return (cfg.flink.user, value(cfg, FLINK_PASSWORD)) if cfg.flink.require_login else None


def flink_client_headers(cfg: FlywheelConfig) -> dict[str, str]:
    """The environment that makes the ``flink`` CLI log in (Flink reads extra REST headers from
    ``FLINK_REST_CLIENT_HEADERS``); empty without ``flink.require_login``."""
    auth = flink_auth(cfg)
    if auth is None:
        return {}
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    # no space after the colon: Flink splits at it and Netty refuses a value that starts with one
    return {"FLINK_REST_CLIENT_HEADERS": f"Authorization:Basic {token}"}
