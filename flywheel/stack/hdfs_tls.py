"""TLS of HDFS's web servers (WebHDFS, the web UI): a CA of the stack and the daemons' keystore.

A secure DataNode refuses plain HTTP, so with ``kerberos.enabled`` HDFS serves HTTPS only, on
the configured HTTP ports. ``ensure`` makes, once, with the JDK's keytool, in three folders
(compose mounts each only where it is needed):

- ``ca/ca.p12``: the CA's key (in compose, the kdc container's only);
- ``server/hdfs.p12``: the NameNode's and DataNode's key, signed by the CA for their host
  names, and ``server/trust.p12``, the CA for Java clients (ssl-client.xml);
- ``public/ca.pem``: the CA's certificate, what Python clients verify against.

The password is flywheel/secrets.py HDFS_KEYSTORE_PASSWORD. A change of host names makes a new
server key.
"""

from __future__ import annotations

from pathlib import Path

from flywheel.config import FlywheelConfig
from flywheel.secrets import HDFS_KEYSTORE_PASSWORD, value, where
from flywheel.stack.server_tls import ServerKeys


def home(cfg: FlywheelConfig) -> Path:
    return cfg.stack.root / "hdfs" / "tls"


def keys(cfg: FlywheelConfig) -> ServerKeys:
    return ServerKeys(home(cfg), "hdfs", "HDFS", value(cfg, HDFS_KEYSTORE_PASSWORD), where(cfg, HDFS_KEYSTORE_PASSWORD))


def ca_pem(cfg: FlywheelConfig) -> Path:
    return home(cfg) / "public" / "ca.pem"


def hosts(cfg: FlywheelConfig) -> list[str]:
    return sorted({cfg.stack.host_of("hdfs_namenode"), cfg.stack.host_of("hdfs_datanode"), "localhost"})


def ensure(cfg: FlywheelConfig) -> None:
    """The CA, the server keystore and the truststore (flywheel/stack/server_tls.py), made when
    missing (or the hosts changed); an existing keystore must open with the configured password."""
    keys(cfg).ensure(hosts(cfg))


def ssl_files(cfg: FlywheelConfig) -> dict[str, str]:
    """ssl-server.xml (the daemons' keystore) and ssl-client.xml (Java clients' truststore)."""
    from flywheel.stack.hdfs import xml

    folder, password = home(cfg) / "server", value(cfg, HDFS_KEYSTORE_PASSWORD)
    server = {"ssl.server.keystore.location": folder / "hdfs.p12", "ssl.server.keystore.type": "pkcs12",
              "ssl.server.keystore.password": password, "ssl.server.keystore.keypassword": password,
              "ssl.server.truststore.location": folder / "trust.p12", "ssl.server.truststore.type": "pkcs12",
              "ssl.server.truststore.password": password}
    client = {"ssl.client.truststore.location": folder / "trust.p12", "ssl.client.truststore.type": "pkcs12",
              "ssl.client.truststore.password": password}
    return {"ssl-server.xml": xml(server), "ssl-client.xml": xml(client)}
