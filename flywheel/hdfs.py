"""Python's way to HDFS: WebHDFS through fsspec (no libhdfs is available from any registry).

With ``kerberos.enabled`` every request goes over TLS (verified against the stack's HDFS CA)
and logs in by SPNEGO as ``kerberos.client``, from its keytab: GSSAPI fetches and renews the
tickets itself, into this process's memory (never the user's ticket cache). The NameNode hands
the DataNode redirects a delegation token, so block reads and writes need no second login.
"""

from __future__ import annotations

import getpass
import os

import fsspec
import requests

from flywheel.config import FlywheelConfig


def _login(cfg: FlywheelConfig):
    """A requests auth that logs in by SPNEGO as the stack's client principal."""
    import gssapi
    import requests_gssapi

    from flywheel.stack import kerberos

    keytab = kerberos.client_keytab(cfg)
    if not keytab.exists():
        raise FileNotFoundError(f"{keytab} is missing: HDFS asks for Kerberos (kerberos.enabled) and this keytab is "
                                "made by 'make up' (the kerberos service); start the stack first")
    if not kerberos.krb5_conf(cfg).exists():  # a host program next to containers (docker/README.md)
        kerberos.write_client_conf(cfg)
    # MIT krb5 reads the realm's config from here on every new context
    os.environ["KRB5_CONFIG"] = str(kerberos.krb5_conf(cfg))
    name = gssapi.Name(kerberos.client_principal(cfg), gssapi.NameType.kerberos_principal)
    creds = gssapi.Credentials(name=name, usage="initiate",
                               store={"client_keytab": str(keytab), "ccache": f"MEMORY:flywheel-{os.getpid()}"})
    return requests_gssapi.HTTPSPNEGOAuth(creds=creds, mutual_authentication=requests_gssapi.OPTIONAL)


def _secure(session: requests.Session, cfg: FlywheelConfig) -> requests.Session:
    from flywheel.stack.hdfs_tls import ca_pem

    if not ca_pem(cfg).exists():
        raise FileNotFoundError(f"{ca_pem(cfg)} is missing: HDFS serves HTTPS only (kerberos.enabled) with a "
                                "certificate of the stack's CA, made by 'make up' (the hdfs service); start the stack first")
    session.verify = str(ca_pem(cfg))
    # else REQUESTS_CA_BUNDLE, when set, silently replaces session.verify (requests#3829)
    session.trust_env = False
    session.auth = _login(cfg)
    return session


def webhdfs(cfg: FlywheelConfig, fresh: bool = False) -> fsspec.AbstractFileSystem:
    """An fsspec filesystem over WebHDFS on the stack's NameNode (usable by pyarrow.dataset);
    ``fresh``: with a session of its own, not fsspec's cached instance."""
    host, port = cfg.stack.host_of("hdfs_namenode"), cfg.hdfs.namenode_http_port
    common = {"host": host, "port": port, "use_listings_cache": False, "skip_instance_cache": fresh}
    if not cfg.kerberos.enabled:
        return fsspec.filesystem("webhdfs", user=getpass.getuser(), **common)
    fs = fsspec.filesystem("webhdfs", use_https=True, **common)
    _secure(fs.session, cfg)
    return fs


def web_session(cfg: FlywheelConfig) -> requests.Session:
    """A session for the NameNode's own pages (/jmx), logged in when HDFS is secure."""
    session = requests.Session()
    return _secure(session, cfg) if cfg.kerberos.enabled else session


def namenode_ready(cfg: FlywheelConfig, timeout: float = 2.0) -> bool:
    """True once the NameNode is out of safe mode and counts a live DataNode. Raises what kept
    it from asking (a refused login, no keytab, no answer), so a caller can say why."""
    with web_session(cfg) as session:
        resp = session.get(f"{cfg.webhdfs_url}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState",
                           timeout=timeout)
    resp.raise_for_status()
    state = (resp.json().get("beans") or [{}])[0]
    return state.get("NumLiveDataNodes", 0) >= 1 and state.get("FSState") == "Operational"
