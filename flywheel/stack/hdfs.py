"""HDFS: a single-node NameNode + DataNode with WebHDFS.

With ``kerberos.enabled`` (the default) HDFS is secure: every RPC client authenticates by
Kerberos (SASL/GSSAPI), the web servers (WebHDFS, the UI, /jmx) by SPNEGO and serve HTTPS only
(flywheel/stack/hdfs_tls.py), and the DataNode authenticates block transfers by SASL
(``dfs.data.transfer.protection``), the way a DataNode on unprivileged ports must.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from flywheel.config import FlywheelConfig
from flywheel.secrets import HDFS_HTTP_SECRET, value
from flywheel.stack import hdfs_tls, kerberos
from flywheel.stack.base import JVM_DIR, Program, Service, jars, java, require, run_once, write

LOG4J = """\
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.BlockStateChange=WARN
log4j.logger.org.apache.hadoop.hdfs.StateChange=WARN
"""


def xml(props: dict[str, object]) -> str:
    body = "\n".join(
        f"  <property><name>{k}</name><value>{escape(str(v))}</value></property>" for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<!-- Rendered by flywheel.stack.hdfs; edits are overwritten. -->\n<configuration>\n{body}\n</configuration>\n'


def site_files(cfg: FlywheelConfig) -> dict[str, str]:
    """core-site.xml and hdfs-site.xml: shared by the daemons, Spark and Flink (HADOOP_CONF_DIR)."""
    bind, h, home = cfg.stack.bind, cfg.hdfs, cfg.stack.root / "hdfs"
    nn, dn = cfg.stack.host_of("hdfs_namenode"), cfg.stack.host_of("hdfs_datanode")
    core = {"fs.defaultFS": cfg.hdfs_uri, "hadoop.tmp.dir": home / "tmp"}
    site = {
        "dfs.replication": h.replication,
        "dfs.namenode.name.dir": home / "name",
        "dfs.datanode.data.dir": home / "data",
        "dfs.namenode.rpc-address": f"{nn}:{h.namenode_port}",
        "dfs.namenode.http-address": f"{nn}:{h.namenode_http_port}",
        "dfs.namenode.rpc-bind-host": bind,
        "dfs.namenode.http-bind-host": bind,
        "dfs.datanode.address": f"{bind}:{h.datanode_port}",
        "dfs.datanode.http.address": f"{bind}:{h.datanode_http_port}",
        "dfs.datanode.ipc.address": f"{bind}:{h.datanode_ipc_port}",
        # what the NameNode hands to clients (WebHDFS redirects, block locations)
        "dfs.datanode.hostname": dn,
        "dfs.namenode.datanode.registration.ip-hostname-check": "false",
        "dfs.namenode.safemode.extension": 0,
        "dfs.namenode.safemode.min.datanodes": 0,
        "dfs.webhdfs.enabled": "true",
        "dfs.permissions.enabled": "false",
        "dfs.client.use.datanode.hostname": "true",
    }
    if cfg.kerberos.enabled:
        secure_core, secure_site = _secure(cfg)
        core.update(secure_core)
        site.update(secure_site)
    return {"core-site.xml": xml(core), "hdfs-site.xml": xml(site)}


def _secure(cfg: FlywheelConfig) -> tuple[dict[str, object], dict[str, object]]:
    """core-site and hdfs-site settings of a secure HDFS (Kerberos, SPNEGO, HTTPS, SASL)."""
    h, realm, bind = cfg.hdfs, cfg.kerberos.realm, cfg.stack.bind
    nn = cfg.stack.host_of("hdfs_namenode")
    names, keytab = kerberos.hdfs_principals(cfg), kerberos.keytab(cfg, "hdfs")
    http = f"{names['web']}@{realm}"
    core = {
        "hadoop.security.authentication": "kerberos",
        "hadoop.rpc.protection": h.protection,
        # a JVM logged in from a keytab (the daemons, Flink, Spark) renews its ticket before it expires
        "hadoop.kerberos.keytab.login.autorenewal.enabled": "true",
        # the web UI, /jmx and /logs: SPNEGO, no anonymous access
        "hadoop.http.filter.initializers": "org.apache.hadoop.security.AuthenticationFilterInitializer",
        "hadoop.http.authentication.type": "kerberos",
        "hadoop.http.authentication.simple.anonymous.allowed": "false",
        "hadoop.http.authentication.kerberos.principal": http,
        "hadoop.http.authentication.kerberos.keytab": keytab,
        "hadoop.http.authentication.signature.secret.file": conf_dir(cfg) / "http-signature-secret",
    }
    site = {
        "dfs.block.access.token.enable": "true",
        "dfs.namenode.kerberos.principal": f"{names['namenode']}@{realm}",
        "dfs.namenode.keytab.file": keytab,
        "dfs.datanode.kerberos.principal": f"{names['datanode']}@{realm}",
        "dfs.datanode.keytab.file": keytab,
        "dfs.web.authentication.kerberos.principal": http,
        "dfs.web.authentication.kerberos.keytab": keytab,
        "dfs.namenode.kerberos.internal.spnego.principal": http,
        "dfs.data.transfer.protection": h.protection,
        # a DataNode on unprivileged ports is secure only with SASL on block transfers and HTTPS;
        # the configured HTTP ports then serve HTTPS
        "dfs.http.policy": "HTTPS_ONLY",
        "dfs.namenode.https-address": f"{nn}:{h.namenode_http_port}",
        "dfs.namenode.https-bind-host": bind,
        "dfs.datanode.https.address": f"{bind}:{h.datanode_http_port}",
    }
    return core, site


def conf_dir(cfg: FlywheelConfig):
    """HADOOP_CONF_DIR of the stack."""
    return cfg.stack.root / "hdfs" / "conf"


def write_conf(cfg: FlywheelConfig, daemon: bool = False) -> None:
    """HADOOP_CONF_DIR and SPARK_CONF_DIR. A ``daemon`` (NameNode, DataNode) of a secure HDFS also
    gets its web servers' files: the keystore's settings and the signing key of its SPNEGO
    cookies (both 0600); without kerberos they are removed."""
    conf = conf_dir(cfg)
    for name, text in site_files(cfg).items():
        write(conf / name, text)
    write(conf / "log4j.properties", LOG4J)
    write(spark_conf_dir(cfg) / "spark-defaults.conf", spark_defaults(cfg))
    if daemon and cfg.kerberos.enabled:
        for name, text in hdfs_tls.ssl_files(cfg).items():
            write(conf / name, text, mode=0o600)
        write(conf / "http-signature-secret", value(cfg, HDFS_HTTP_SECRET), mode=0o600)
    elif daemon:
        for name in ("ssl-server.xml", "ssl-client.xml", "http-signature-secret"):
            (conf / name).unlink(missing_ok=True)


def spark_conf_dir(cfg: FlywheelConfig):
    """SPARK_CONF_DIR of the stack's Spark drivers (flywheel/spark.py spark_env)."""
    return cfg.stack.root / "spark" / "conf"


def spark_defaults(cfg: FlywheelConfig) -> str:
    """spark-defaults.conf: with a secure HDFS, spark-submit (and so a SparkSession started from
    Python) logs in from the client keytab, and the driver's JVM finds the realm."""
    if not cfg.kerberos.enabled:
        return "# Rendered by flywheel.stack.hdfs: HDFS is not secure (kerberos.enabled: false), nothing to set.\n"
    return (
        "# Rendered by flywheel.stack.hdfs from the config; edits here are overwritten.\n"
        f"spark.kerberos.principal {kerberos.client_principal(cfg)}\n"
        f"spark.kerberos.keytab {kerberos.client_keytab(cfg)}\n"
        f"spark.driver.extraJavaOptions {kerberos.java_options(cfg)}\n"
        f"spark.executor.extraJavaOptions {kerberos.java_options(cfg)}\n"
    )


def service(cfg: FlywheelConfig) -> Service:
    home = cfg.stack.root / "hdfs"
    conf = conf_dir(cfg)
    # formatting needs no login (and runs before the KDC does): it reads a plain copy of the config
    format_conf = home / "conf-format"

    def jvm_with(folder) -> list[str]:
        return [
            java(), "-Xms32m", f"-Xmx{cfg.hdfs.heap}", "-XX:+UseSerialGC",
            # Java 17: WebHDFS answers 500 without this (JAXB reflection).
            "--add-opens=java.base/java.lang=ALL-UNNAMED",
            f"-Dhadoop.log.dir={cfg.stack.logs}", f"-Dhadoop.home.dir={home}",
            f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
            *([kerberos.java_options(cfg)] if cfg.kerberos.enabled else []),
            "-cp", ":".join([str(folder), str(JVM_DIR / "hdfs-webapps"), jars("hdfs")]),
        ]

    jvm = jvm_with(conf)
    namenode = "org.apache.hadoop.hdfs.server.namenode.NameNode"
    datanode = "org.apache.hadoop.hdfs.server.datanode.DataNode"

    def prepare() -> None:
        require(JVM_DIR / "hdfs-webapps" / "webapps", "HDFS web UI files")
        if cfg.kerberos.enabled:
            hdfs_tls.ensure(cfg)
        write_conf(cfg, daemon=True)
        if not (home / "name" / "current" / "VERSION").exists():
            plain = cfg.model_copy(update={"kerberos": cfg.kerberos.model_copy(update={"enabled": False})})
            for name, text in site_files(plain).items():
                write(format_conf / name, text)
            run_once(jvm_with(format_conf) + [namenode, "-format", "-nonInteractive", "-force"],
                     "formatting the HDFS NameNode")

    def healthy() -> bool:
        from flywheel.hdfs import namenode_ready

        return namenode_ready(cfg)

    def post_start() -> None:
        from flywheel.hdfs import webhdfs

        fs = webhdfs(cfg)
        for path in (cfg.hdfs.root, cfg.flink.checkpoint_dir, cfg.flink.savepoint_dir):
            fs.makedirs(path, exist_ok=True)

    return Service(
        name="hdfs",
        url=f"{cfg.webhdfs_url} (UI), {cfg.hdfs_uri}",
        programs=[Program("hdfs-namenode", jvm + [namenode]), Program("hdfs-datanode", jvm + [datanode])],
        prepare=prepare,
        healthy=healthy,
        post_start=post_start,
        requires=["kerberos"] if cfg.kerberos.enabled else [],
        start_after=["kerberos"] if cfg.kerberos.enabled else [],
        ports=[cfg.hdfs.namenode_port, cfg.hdfs.namenode_http_port, cfg.hdfs.datanode_port,
               cfg.hdfs.datanode_http_port, cfg.hdfs.datanode_ipc_port],
    )
