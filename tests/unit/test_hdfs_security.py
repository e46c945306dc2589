"""HDFS's door, without a running HDFS: the realm and keytabs that flywheel/stack/kerberos.py
makes with the real MIT tools, the CA and keystore of flywheel/stack/hdfs_tls.py made with the
real keytool, and the secure settings handed to HDFS, Spark and Flink."""

import subprocess

import pytest

from flywheel.config import load_config
from flywheel.spark import spark_env
from flywheel.stack import flink, flink_tls, hdfs, hdfs_tls, kerberos, keytool, server_tls
from flywheel.stack.base import StackError, services


@pytest.fixture
def cfg(state_cfg):
    return state_cfg


def _off(cfg):
    return cfg.model_copy(update={"kerberos": cfg.kerberos.model_copy(update={"enabled": False})})


def _keytab_entries(cfg, path):
    """(kvno, principal, key) of each entry."""
    out = subprocess.run([kerberos.tool("klist"), "-k", "-K", str(path)], capture_output=True, text=True,
                         check=True, env=kerberos.environment(cfg)).stdout
    return sorted(tuple(line.split()[:3]) for line in out.splitlines()[3:] if line.strip())


def test_prepare_makes_the_realm_its_principals_and_private_keytabs_and_keeps_their_keys(cfg):
    kerberos.prepare(cfg)
    conf = kerberos.krb5_conf(cfg).read_text()
    assert "default_realm = FLYWHEEL.LOCAL" in conf and "kdc = 127.0.0.1:7088" in conf
    assert "rdns = false" in conf and "dns_canonicalize_hostname = false" in conf
    assert "kdc_listen = 127.0.0.1:7088" in (kerberos.home(cfg) / "kdc.conf").read_text()
    service, client = kerberos.keytab(cfg, "hdfs"), kerberos.client_keytab(cfg)
    assert {name for _, name, _ in _keytab_entries(cfg, service)} == {
        "hdfs/127.0.0.1@FLYWHEEL.LOCAL", "HTTP/127.0.0.1@FLYWHEEL.LOCAL"}
    assert {name for _, name, _ in _keytab_entries(cfg, client)} == {"flywheel@FLYWHEEL.LOCAL"}
    for path in (service, client):
        assert oct(path.stat().st_mode)[-3:] == "600"
    before = _keytab_entries(cfg, client)
    assert len(before) == 2 and all(key.startswith("(0x") for _, _, key in before)  # two enctypes
    client.unlink()  # a lost keytab is exported again with the same keys and kvno, not new ones
    kerberos.prepare(cfg)
    assert _keytab_entries(cfg, client) == before


def test_a_new_realm_replaces_the_keytabs_of_an_old_one(cfg):
    import shutil

    kerberos.prepare(cfg)
    before = _keytab_entries(cfg, kerberos.client_keytab(cfg))
    shutil.rmtree(kerberos.home(cfg) / "db")  # the realm's database lost, its keytabs still there
    kerberos.prepare(cfg)
    after = _keytab_entries(cfg, kerberos.client_keytab(cfg))
    assert {key for _, _, key in after}.isdisjoint(key for _, _, key in before)


def test_no_secret_reaches_a_command_line(cfg, monkeypatch):
    from flywheel.stack import base

    seen = []
    real = base.run_once

    def recording(cmd, what, *args, **kwargs):
        seen.append(cmd)
        return real(cmd, what, *args, **kwargs)

    for module in (kerberos, keytool):
        monkeypatch.setattr(module, "run_once", recording)
    monkeypatch.setenv("FLYWHEEL_HDFS_KEYSTORE_PASSWORD", "keystore-secret-1")
    monkeypatch.setenv("FLYWHEEL_FLINK_INTERNAL_PASSWORD", "flink-secret-2")
    kerberos.prepare(cfg)
    hdfs_tls.ensure(cfg)
    hdfs_tls.ensure(cfg)  # the second time it opens the keystore
    flink_tls.ensure(cfg)
    flink_tls.ensure(cfg)
    assert any(cmd[0].endswith("kdb5_util") for cmd in seen) and any(cmd[0].endswith("keytool") for cmd in seen)
    for cmd in seen:
        assert "-P" not in cmd and "-pw" not in cmd, cmd  # kdb5_util's and ktutil's password flags
        assert not any("keystore-secret-1" in arg or "flink-secret-2" in arg for arg in cmd), cmd


def test_a_keystore_that_does_not_open_with_the_password_says_what_to_do(cfg, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HDFS_KEYSTORE_PASSWORD", "first-password")
    hdfs_tls.ensure(cfg)
    monkeypatch.setenv("FLYWHEEL_HDFS_KEYSTORE_PASSWORD", "second-password")
    with pytest.raises(StackError, match="does not open with the keystore password .*FLYWHEEL_HDFS_KEYSTORE_PASSWORD"):
        hdfs_tls.ensure(cfg)


def test_the_client_name_cannot_be_a_daemons(tmp_path):
    from flywheel.config import ConfigError

    with pytest.raises(ConfigError, match="HDFS daemons"):
        load_config(files=[], environ={"FLYWHEEL__KERBEROS__CLIENT": "hdfs"})


def test_the_kdc_runs_before_hdfs_only_when_kerberos_is_on(cfg):
    names = [s.name for s in services(cfg)]
    assert names.index("kerberos") < names.index("hdfs")
    assert hdfs.service(cfg).start_after == ["kerberos"]
    assert "kerberos" not in [s.name for s in services(_off(cfg))] and hdfs.service(_off(cfg)).start_after == []


def test_the_ca_signs_the_hdfs_key_for_the_hosts_clients_dial(cfg, tmp_path):
    hdfs_tls.ensure(cfg)
    folder = hdfs_tls.home(cfg) / "server"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(hdfs_tls.ca_pem(cfg)), str(folder / "hdfs.pem")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(folder / "hdfs.pem")],
                          capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert oct((folder / "hdfs.p12").stat().st_mode)[-3:] == "600"
    assert oct((hdfs_tls.home(cfg) / "ca" / "ca.p12").stat().st_mode)[-3:] == "600"
    made = (folder / "hdfs.p12").read_bytes()
    hdfs_tls.ensure(cfg)  # nothing changed: the same key
    assert (folder / "hdfs.p12").read_bytes() == made
    assert server_tls.san(["127.0.0.1", "hdfs-namenode"]) == "SAN=IP:127.0.0.1,DNS:hdfs-namenode"


def test_secure_hdfs_asks_for_kerberos_everywhere_and_serves_https_only(cfg):
    files = hdfs.site_files(cfg)
    core, site = files["core-site.xml"], files["hdfs-site.xml"]
    for setting in ("<name>hadoop.security.authentication</name><value>kerberos</value>",
                    "<name>hadoop.http.authentication.type</name><value>kerberos</value>",
                    "<name>hadoop.http.authentication.simple.anonymous.allowed</name><value>false</value>",
                    "<name>hadoop.rpc.protection</name><value>authentication</value>"):
        assert setting in core
    for setting in ("<name>dfs.http.policy</name><value>HTTPS_ONLY</value>",
                    "<name>dfs.namenode.https-address</name><value>127.0.0.1:9870</value>",
                    "<name>dfs.data.transfer.protection</name><value>authentication</value>",
                    "<name>dfs.block.access.token.enable</name><value>true</value>",
                    "<name>dfs.namenode.kerberos.principal</name><value>hdfs/127.0.0.1@FLYWHEEL.LOCAL</value>",
                    "<name>dfs.web.authentication.kerberos.principal</name><value>HTTP/127.0.0.1@FLYWHEEL.LOCAL</value>"):
        assert setting in site
    assert cfg.webhdfs_url == "https://127.0.0.1:9870"
    off = hdfs.site_files(_off(cfg))
    assert "kerberos" not in off["core-site.xml"] + off["hdfs-site.xml"] and _off(cfg).webhdfs_url.startswith("http://")


def test_spark_and_flink_log_in_from_the_client_keytab_and_find_the_realm(cfg):
    defaults = hdfs.spark_defaults(cfg)
    assert f"spark.kerberos.keytab {kerberos.client_keytab(cfg)}" in defaults
    assert "spark.kerberos.principal flywheel@FLYWHEEL.LOCAL" in defaults
    assert f"spark.driver.extraJavaOptions -Djava.security.krb5.conf={kerberos.krb5_conf(cfg)}" in defaults
    assert spark_env(cfg)["SPARK_CONF_DIR"] == str(hdfs.spark_conf_dir(cfg))
    assert "spark.kerberos" not in hdfs.spark_defaults(_off(cfg))
    conf = flink.flink_config(cfg)
    login = conf["security"]["kerberos"]["login"]
    assert (login["keytab"], login["principal"]) == (str(kerberos.client_keytab(cfg)), "flywheel@FLYWHEEL.LOCAL")
    opts = conf["env"]["java"]["opts"]["all"]
    assert opts.endswith(kerberos.java_options(cfg)) and "--add-opens=java.base/java.lang=ALL-UNNAMED" in opts
    assert "kerberos" not in flink.flink_config(_off(cfg)).get("security", {})


def test_a_client_without_the_keytab_is_told_to_start_the_stack(cfg):
    from flywheel.hdfs import webhdfs

    with pytest.raises(FileNotFoundError, match="make up"):
        webhdfs(cfg)
