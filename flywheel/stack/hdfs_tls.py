"""TLS of HDFS's web servers (WebHDFS, the web UI): a CA of the stack and the daemons' keystore.

A secure DataNode refuses plain HTTP, so with ``kerberos.enabled`` HDFS serves HTTPS only, on
the configured HTTP ports. ``ensure`` makes, once, with the JDK's keytool, in three folders
(compose mounts each only where it is needed):

- ``ca/ca.p12``: the CA's key (in compose, the kdc container's only);
- ``server/hdfs.p12``: the NameNode's and DataNode's key, signed by the CA for their host
  names, and ``server/trust.p12``, the CA for Java clients (ssl-client.xml);
- ``public/ca.pem``: the CA's certificate, what Python clients verify against.

The password (flywheel/secrets.py HDFS_KEYSTORE_PASSWORD) reaches keytool through its
environment (flywheel/stack/keytool.py), never a command line. A change of host names makes a new
server key.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from flywheel.config import FlywheelConfig
from flywheel.secrets import HDFS_KEYSTORE_PASSWORD, value, where
from flywheel.stack.base import StackError, write
from flywheel.stack.keytool import check_password, keytool, store, wrong_password


def home(cfg: FlywheelConfig) -> Path:
    return cfg.stack.root / "hdfs" / "tls"


def ca_pem(cfg: FlywheelConfig) -> Path:
    return home(cfg) / "public" / "ca.pem"


def hosts(cfg: FlywheelConfig) -> list[str]:
    return sorted({cfg.stack.host_of("hdfs_namenode"), cfg.stack.host_of("hdfs_datanode"), "localhost"})


def san(names: list[str]) -> str:
    """keytool's SubjectAlternativeName extension for ``names`` (IP addresses and DNS names)."""
    def entry(name: str) -> str:
        try:
            ipaddress.ip_address(name)
            return f"IP:{name}"
        except ValueError:
            return f"DNS:{name}"
    return "SAN=" + ",".join(entry(n) for n in names)


def _keytool(cfg: FlywheelConfig, *args: str, what: str) -> str:
    return keytool(value(cfg, HDFS_KEYSTORE_PASSWORD), *args, what=what, source=where(cfg, HDFS_KEYSTORE_PASSWORD))


def ensure(cfg: FlywheelConfig) -> None:
    """The CA, the server keystore and the truststore, made when missing (or the hosts changed);
    an existing keystore must open with the configured password."""
    names = hosts(cfg)
    check_password(value(cfg, HDFS_KEYSTORE_PASSWORD), where(cfg, HDFS_KEYSTORE_PASSWORD))
    ca_dir, server_dir = home(cfg) / "ca", home(cfg) / "server"
    for folder in (ca_dir, server_dir, ca_pem(cfg).parent):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca, server, trust = ca_dir / "ca.p12", server_dir / "hdfs.p12", server_dir / "trust.p12"
    marker = server_dir / "hosts"
    if server.exists() and trust.exists() and ca_pem(cfg).exists() and marker.exists() \
            and marker.read_text() == "\n".join(names):
        try:  # all there (in compose, the HDFS containers hold no CA key): does it open?
            _keytool(cfg, "-list", *store(server), what="opening HDFS's keystore")
        except StackError as exc:
            if not wrong_password(exc):
                raise
            raise StackError(f"{server} does not open with the keystore password ({where(cfg, HDFS_KEYSTORE_PASSWORD)}): "
                             f"set that password back, or delete {home(cfg)} to make new keys (clients then verify "
                             "against the new ca.pem)") from None
        return
    if not ca.exists():
        for stale in (server, trust, ca_pem(cfg)):
            stale.unlink(missing_ok=True)
        _keytool(cfg, "-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
                 "-dname", "CN=Flywheel HDFS CA", "-ext", "bc:c", *store(ca), what="making the HDFS CA")
        os.chmod(ca, 0o600)
    if not ca_pem(cfg).exists():
        write(ca_pem(cfg), _keytool(cfg, "-exportcert", "-rfc", "-alias", "ca", *store(ca), what="exporting the HDFS CA"))
    if not trust.exists():
        _keytool(cfg, "-importcert", "-noprompt", "-alias", "ca", "-file", str(ca_pem(cfg)), *store(trust),
                 what="making HDFS's truststore")
    fresh = server_dir / "hdfs.p12.new"
    fresh.unlink(missing_ok=True)
    _keytool(cfg, "-genkeypair", "-alias", "hdfs", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
             "-dname", f"CN={names[0]},O=Flywheel", *store(fresh), what="making HDFS's key")
    request = _keytool(cfg, "-certreq", "-alias", "hdfs", *store(fresh), what="HDFS's certificate request")
    (server_dir / "hdfs.csr").write_text(request)
    signed = _keytool(cfg, "-gencert", "-alias", "ca", *store(ca), "-infile", str(server_dir / "hdfs.csr"), "-rfc",
                      "-validity", "3650", "-ext", san(names), "-ext", "ku:c=digitalSignature,keyEncipherment",
                      "-ext", "eku=serverAuth", what="signing HDFS's certificate")
    (server_dir / "hdfs.pem").write_text(signed)
    _keytool(cfg, "-importcert", "-noprompt", "-alias", "ca", "-file", str(ca_pem(cfg)), *store(fresh),
             what="adding the CA to HDFS's keystore")
    _keytool(cfg, "-importcert", "-alias", "hdfs", "-file", str(server_dir / "hdfs.pem"), *store(fresh),
             what="adding HDFS's signed certificate")
    os.chmod(fresh, 0o600)
    os.replace(fresh, server)
    marker.write_text("\n".join(names))


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
