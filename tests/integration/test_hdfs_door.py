"""HDFS's door on the real stack (kerberos.enabled): no Kerberos login, no way in, over WebHDFS,
the web UI or RPC; the same requests with the stack's client keytab get in."""

import subprocess

import pytest
import requests

from flywheel.hdfs import namenode_ready, webhdfs
from flywheel.stack import hdfs, hdfs_tls, kerberos
from flywheel.stack.base import java, jars

pytestmark = pytest.mark.integration


@pytest.fixture
def secure(stack):
    if not stack.kerberos.enabled:
        pytest.skip("kerberos.enabled is off in this config")
    return stack


def test_webhdfs_and_the_web_ui_refuse_a_request_without_a_kerberos_login(secure):
    ca = str(hdfs_tls.ca_pem(secure))
    # user.name is how an insecure HDFS is told who you are: here it must not be enough
    for path in ("/webhdfs/v1/?op=LISTSTATUS", "/webhdfs/v1/flywheel?op=LISTSTATUS&user.name=hdfs",
                 "/webhdfs/v1/flywheel/x?op=MKDIRS&user.name=hdfs", "/jmx"):
        method = "PUT" if "MKDIRS" in path else "GET"
        resp = requests.request(method, f"{secure.webhdfs_url}{path}", verify=ca, timeout=10)
        assert resp.status_code == 401, (path, resp.status_code, resp.text[:300])
        assert resp.headers.get("WWW-Authenticate") == "Negotiate"
    assert not webhdfs(secure).exists(f"{secure.hdfs.root}/x")
    # the same NameNode, logged in from the client keytab
    assert namenode_ready(secure)


def test_the_web_port_speaks_tls_only(secure):
    plain = f"http://{secure.stack.host_of('hdfs_namenode')}:{secure.hdfs.namenode_http_port}"
    # the port answers (HTTPS, asking for a login) ...
    assert requests.get(f"{secure.webhdfs_url}/jmx", verify=str(hdfs_tls.ca_pem(secure)), timeout=10).status_code == 401
    try:  # ... and plain HTTP on it gets nothing
        resp = requests.get(f"{plain}/webhdfs/v1/?op=LISTSTATUS&user.name=hdfs", timeout=10)
    except requests.ConnectionError:
        return
    assert resp.status_code >= 400 and "FileStatuses" not in resp.text


def _fs_shell(cfg, ccache, *args):
    cmd = [java(), kerberos.java_options(cfg), "-cp", f"{hdfs.conf_dir(cfg)}:{jars('hdfs')}",
           "org.apache.hadoop.fs.FsShell", *args]
    env = {"KRB5CCNAME": f"FILE:{ccache}", "KRB5_CONFIG": str(kerberos.krb5_conf(cfg)), "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_rpc_refuses_a_client_without_a_ticket_and_serves_one_with_the_client_keytab(secure, tmp_path):
    ccache = tmp_path / "ccache"
    refused = _fs_shell(secure, ccache, "-ls", secure.hdfs.root)
    assert refused.returncode != 0
    assert "Client cannot authenticate via:[TOKEN, KERBEROS]" in refused.stderr, refused.stderr[-2000:]

    kinit = subprocess.run([kerberos.tool("kinit"), "-c", f"FILE:{ccache}", "-kt", str(kerberos.client_keytab(secure)),
                            kerberos.client_principal(secure)], capture_output=True, text=True, timeout=60,
                           env={"KRB5_CONFIG": str(kerberos.krb5_conf(secure)), "PATH": "/usr/bin:/bin"})
    assert kinit.returncode == 0, kinit.stderr
    allowed = _fs_shell(secure, ccache, "-ls", secure.hdfs.root)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert f"{secure.hdfs.root}/flink" in allowed.stdout
