"""The stack's Kerberos realm: MIT krb5kdc (Debian's ``krb5-kdc``), run as a supervised program.

HDFS has no authentication of its own but Kerberos. ``prepare`` makes the realm's database
once (its master key lives only in the stash file), the principals HDFS and its clients need,
and their keytabs (mode 0600, exported without changing keys, so a re-export never invalidates
a keytab a running program holds):

- ``hdfs/hdfs.keytab``: ``hdfs/<host>`` of the NameNode and DataNode, ``HTTP/<namenode>`` of
  their web servers (SPNEGO);
- ``<client>/<client>.keytab``: ``kerberos.client``, the one identity of every HDFS client of the stack
  (Python over WebHDFS, Spark, Flink).

Every file lives in ``<state>/kerberos``; nothing is written to /etc. Programs find the realm
through ``KRB5_CONFIG`` (C: kinit, GSSAPI) or ``-Djava.security.krb5.conf`` (JVM).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from flywheel.config import FlywheelConfig
from flywheel.stack.base import Program, Service, StackError, port_open, run_once, write

SBIN = ("/usr/sbin", "/usr/bin")


def tool(name: str) -> str:
    """Path of a krb5 program (in /usr/sbin, often not on a user's PATH)."""
    path = shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)
    if not path:
        raise StackError(f"{name} not found: it runs the Kerberos realm that guards HDFS (kerberos.enabled). "
                         "Run 'make setup' (apt-get install krb5-kdc krb5-admin-server krb5-user), "
                         "or set kerberos.enabled: false on a host nobody else uses")
    return path


def home(cfg: FlywheelConfig) -> Path:
    return cfg.stack.root / "kerberos"


def krb5_conf(cfg: FlywheelConfig) -> Path:
    """The realm's client config (KRB5_CONFIG / java.security.krb5.conf)."""
    return home(cfg) / "krb5.conf"


def keytab(cfg: FlywheelConfig, name: str) -> Path:
    """A keytab, alone in its folder (compose mounts each folder only where it is needed)."""
    return home(cfg) / "keytabs" / name / f"{name}.keytab"


def principal(cfg: FlywheelConfig, name: str) -> str:
    return f"{name}@{cfg.kerberos.realm}"


def client_principal(cfg: FlywheelConfig) -> str:
    return principal(cfg, cfg.kerberos.client)


def client_keytab(cfg: FlywheelConfig) -> Path:
    return keytab(cfg, cfg.kerberos.client)


def hdfs_principals(cfg: FlywheelConfig) -> dict[str, str]:
    """The HDFS daemons' principals (without realm), by role. One web principal, the NameNode's
    host, serves SPNEGO on both daemons' pages: clients dial the NameNode (the DataNode's pages
    are reached by its redirects, which carry a delegation token instead). Not HTTP/_HOST:
    Hadoop fills _HOST from a reverse lookup (127.0.0.1 -> localhost), while clients ask for the
    host they dial."""
    nn, dn = cfg.stack.host_of("hdfs_namenode"), cfg.stack.host_of("hdfs_datanode")
    return {"namenode": f"hdfs/{nn}", "datanode": f"hdfs/{dn}", "web": f"HTTP/{nn}"}


def keytabs(cfg: FlywheelConfig) -> dict[str, list[str]]:
    """Each keytab's principals (without realm)."""
    return {"hdfs": sorted(set(hdfs_principals(cfg).values())), cfg.kerberos.client: [cfg.kerberos.client]}


def java_options(cfg: FlywheelConfig) -> str:
    """What a JVM needs to find the realm."""
    return f"-Djava.security.krb5.conf={krb5_conf(cfg)}"


def krb5_conf_text(cfg: FlywheelConfig) -> str:
    k = cfg.kerberos
    return f"""\
# Rendered by flywheel.stack.kerberos from the config; edits here are overwritten.
[libdefaults]
  default_realm = {k.realm}
  dns_lookup_realm = false
  dns_lookup_kdc = false
  # principals name hosts as clients dial them (127.0.0.1 here, compose names in containers)
  dns_canonicalize_hostname = false
  rdns = false
  udp_preference_limit = 1
  ticket_lifetime = 10h
  renew_lifetime = 7d
  forwardable = true

[realms]
  {k.realm} = {{
    kdc = {cfg.stack.host_of("kdc")}:{k.port}
  }}
"""


def kdc_conf_text(cfg: FlywheelConfig) -> str:
    k, db = cfg.kerberos, home(cfg) / "db"
    return f"""\
# Rendered by flywheel.stack.kerberos from the config; edits here are overwritten.
[kdcdefaults]
  kdc_listen = {cfg.stack.bind}:{k.port}
  kdc_tcp_listen = {cfg.stack.bind}:{k.port}

[realms]
  {k.realm} = {{
    database_name = {db / "principal"}
    key_stash_file = {db / "stash"}
    acl_file = {home(cfg) / "kadm5.acl"}
    max_life = 10h
    max_renewable_life = 7d
    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  }}

[logging]
  kdc = STDERR
"""


def environment(cfg: FlywheelConfig) -> dict[str, str]:
    """Environment of the KDC and its admin tools (never the caller's KRB5CCNAME)."""
    return {"KRB5_CONFIG": str(krb5_conf(cfg)), "KRB5_KDC_PROFILE": str(home(cfg) / "kdc.conf"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def _admin(cfg: FlywheelConfig, query: str, what: str) -> str:
    return run_once([tool("kadmin.local"), "-r", cfg.kerberos.realm, "-q", query], what, env=environment(cfg),
                    timeout=60)


def _keytab_principals(cfg: FlywheelConfig, path: Path) -> set[str]:
    proc = subprocess.run([tool("klist"), "-k", str(path)], capture_output=True, text=True, timeout=30,
                          env=environment(cfg))
    return {line.split()[-1] for line in proc.stdout.splitlines()[3:] if line.strip()}


def write_client_conf(cfg: FlywheelConfig) -> None:
    """krb5.conf, all a client of the realm needs besides its keytab; replaced whole, and only
    when it changed (running clients re-read it)."""
    path, text = krb5_conf(cfg), krb5_conf_text(cfg)
    if path.exists() and path.read_text() == text:
        return
    fresh = write(path.with_suffix(".new"), text)
    os.replace(fresh, path)


def prepare(cfg: FlywheelConfig) -> None:
    """Config files, the realm's database (once), every principal and keytab (when missing)."""
    folder = home(cfg)
    write_client_conf(cfg)
    write(folder / "kdc.conf", kdc_conf_text(cfg))
    write(folder / "kadm5.acl", "# no kadmind: principals are made by kadmin.local in flywheel.stack.kerberos\n")
    if not (folder / "db" / "principal").exists():
        (folder / "db").mkdir(parents=True, exist_ok=True, mode=0o700)
        # a new realm has new keys: keytabs of an old one would only fail every login
        for stale in (folder / "keytabs").glob("*/*.keytab"):
            stale.unlink()
        # the master key is random, given on stdin, and kept only in the stash file (db/, mode 0700)
        master = secrets.token_urlsafe(32)
        run_once([tool("kdb5_util"), "create", "-s", "-r", cfg.kerberos.realm], "creating the Kerberos realm's database",
                 env=environment(cfg), timeout=120, stdin=f"{master}\n{master}\n")
    known = set(_admin(cfg, "listprincs", "listing Kerberos principals").split())
    realm = cfg.kerberos.realm
    for name, members in keytabs(cfg).items():
        for member in members:
            if principal(cfg, member) not in known:
                _admin(cfg, f"addprinc -randkey {member}", f"adding the Kerberos principal {member}")
        path = keytab(cfg, name)
        wanted = {f"{m}@{realm}" for m in members}
        if path.exists() and wanted <= _keytab_principals(cfg, path):
            continue
        (folder / "keytabs").mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        fresh = path.with_suffix(".new")
        fresh.unlink(missing_ok=True)
        _admin(cfg, f"ktadd -norandkey -k {fresh} {' '.join(members)}", f"exporting the keytab {path.name}")
        os.chmod(fresh, 0o600)
        os.replace(fresh, path)


def service(cfg: FlywheelConfig) -> Service:
    k = cfg.kerberos
    return Service(
        name="kerberos",
        url=f"kdc {cfg.stack.host_of('kdc')}:{k.port}, realm {k.realm}, keytabs {home(cfg) / 'keytabs'}",
        # the path is checked by prepare() (before a start), so status and down work without krb5
        programs=[Program("kdc", [shutil.which("krb5kdc") or "/usr/sbin/krb5kdc", "-n", "-r", k.realm],
                          env=environment(cfg))],
        prepare=lambda: (tool("krb5kdc"), prepare(cfg)),
        healthy=lambda: port_open(cfg.stack.host_of("kdc"), k.port),
        ports=[k.port],
    )
