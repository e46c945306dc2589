"""HDFS: a single-node NameNode + DataNode with WebHDFS."""

from __future__ import annotations


from flywheel.config import FlywheelConfig
from flywheel.stack.base import JVM_DIR, Program, Service, http_json, jars, java, require, run_once, write

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


def _xml(props: dict[str, object]) -> str:
    body = "\n".join(
        f"  <property><name>{k}</name><value>{v}</value></property>" for k, v in props.items()
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
    return {"core-site.xml": _xml(core), "hdfs-site.xml": _xml(site)}


def conf_dir(cfg: FlywheelConfig):
    """HADOOP_CONF_DIR of the stack."""
    return cfg.stack.root / "hdfs" / "conf"


def service(cfg: FlywheelConfig) -> Service:
    home = cfg.stack.root / "hdfs"
    conf = conf_dir(cfg)
    classpath = ":".join([str(conf), str(JVM_DIR / "hdfs-webapps"), jars("hdfs")])
    jvm = [
        java(), "-Xms32m", f"-Xmx{cfg.hdfs.heap}", "-XX:+UseSerialGC",
        # Java 17: WebHDFS answers 500 without this (JAXB reflection).
        "--add-opens=java.base/java.lang=ALL-UNNAMED",
        f"-Dhadoop.log.dir={cfg.stack.logs}", f"-Dhadoop.home.dir={home}",
        f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
        "-cp", classpath,
    ]
    namenode = "org.apache.hadoop.hdfs.server.namenode.NameNode"
    datanode = "org.apache.hadoop.hdfs.server.datanode.DataNode"

    def prepare() -> None:
        require(JVM_DIR / "hdfs-webapps" / "webapps", "HDFS web UI files")
        for name, text in site_files(cfg).items():
            write(conf / name, text)
        write(conf / "log4j.properties", LOG4J)
        if not (home / "name" / "current" / "VERSION").exists():
            run_once(jvm + [namenode, "-format", "-nonInteractive", "-force"], "formatting the HDFS NameNode")

    def healthy() -> bool:
        beans = http_json(f"{cfg.webhdfs_url}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState")
        if not beans or not beans.get("beans"):
            return False
        state = beans["beans"][0]
        return state.get("NumLiveDataNodes", 0) >= 1 and state.get("FSState") == "Operational"

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
        ports=[cfg.hdfs.namenode_port, cfg.hdfs.namenode_http_port, cfg.hdfs.datanode_port,
               cfg.hdfs.datanode_http_port, cfg.hdfs.datanode_ipc_port],
    )
