"""The default data (datasets/default.py) with no internet: a fake ml-100k.zip built here and
served from 127.0.0.1 (or a file:// URL); fallbacks to the synthetic world with one line saying
why; the clear error of source=movielens; caches reused without network or regeneration."""

import functools
import hashlib
import http.server
import socket
import threading
import zipfile

import pytest

import datasets
from datasets import contract, default, synthetic

T0 = 880_000_000  # unix s, in ml-100k's time
FILES = {
    "u.data": "".join(f"{u}\t{i}\t{r}\t{T0 + t}\n" for u, i, r, t in [(1, 10, 5, 100), (1, 11, 3, 200), (2, 10, 4, 300)]),
    "u.item": "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|" + "|".join("1" if g == i % 19 else "0"
                                                                                for g in range(19)) + "\n"
                      for i in (10, 11)),
    "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
    "README": "a fake MovieLens 100K for tests\n",
    "u1.base": "not extracted\n",
}
SYNTHETIC_LINE = f"using the synthetic world (600 users, 1000 items, seed {default.SYNTHETIC['seed']}) in "


@pytest.fixture
def release(tmp_path):
    """A fake ml-100k.zip in tmp_path/www (the real layout), and its checksums as pinned values."""
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "ml-100k.zip", "w") as zipped:
        for name, text in FILES.items():
            zipped.writestr(f"ml-100k/{name}", text)
    md5 = hashlib.md5((www / "ml-100k.zip").read_bytes()).hexdigest()
    shas = {n: hashlib.sha256(FILES[n].encode()).hexdigest() for n in default.FILES_SHA256}
    return www, md5, shas


@pytest.fixture
def server(release):
    """An HTTP server on 127.0.0.1 serving the release's folder; ``requests`` counts its requests."""
    requests = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(release[0])))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Never the internet: the URL is a closed local port unless a test points it elsewhere."""
    monkeypatch.setenv(default.URL_ENV, f"http://127.0.0.1:{closed_port()}/ml-100k.zip")


def pin(monkeypatch, release, archive=True, files=True):
    if archive:
        monkeypatch.setattr(default, "ARCHIVE_MD5", release[1])
    if files:
        monkeypatch.setattr(default, "FILES_SHA256", release[2])


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_a_verified_release_is_extracted_marked_and_loads(tmp_path, monkeypatch, release, server, scheme):
    pin(monkeypatch, release)
    url = f"{server[0]}/ml-100k.zip" if scheme == "http" else (release[0] / "ml-100k.zip").as_uri()
    monkeypatch.setenv(default.URL_ENV, url)
    lines = []
    folder = default.default_data(tmp_path / "cache", echo=lines.append)
    assert folder == tmp_path / "cache" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == [default.MARKER, "README", "u.data", "u.item", "u.user"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["ml-100k"]  # no temporary file or folder left
    assert lines == [f"fetched MovieLens 100K from {url} into {folder} (checksums verified)"]
    assert len(datasets.load(folder).events) == 3


def test_a_complete_cache_is_reused_without_network(tmp_path, monkeypatch, release, server):
    pin(monkeypatch, release)
    monkeypatch.setenv(default.URL_ENV, f"{server[0]}/ml-100k.zip")
    folder = default.default_data(tmp_path, "movielens", echo=lambda _: None)
    fetched, lines = len(server[1]), []
    assert fetched == 1
    assert default.default_data(tmp_path, "movielens", echo=lines.append) == folder
    assert len(server[1]) == fetched and lines == []


def test_an_extracted_copy_without_marker_is_adopted_offline(tmp_path, monkeypatch, release):
    pin(monkeypatch, release)
    (tmp_path / "ml-100k").mkdir()
    for name in default.FILES_SHA256:
        (tmp_path / "ml-100k" / name).write_text(FILES[name])
    assert default.default_data(tmp_path, "movielens") == tmp_path / "ml-100k"
    assert (tmp_path / "ml-100k" / default.MARKER).is_file()


def test_an_incomplete_folder_is_replaced(tmp_path, monkeypatch, release, server):
    pin(monkeypatch, release)
    monkeypatch.setenv(default.URL_ENV, f"{server[0]}/ml-100k.zip")
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("half a download")
    folder = default.default_data(tmp_path, "movielens", echo=lambda _: None)
    assert (folder / "u.data").read_text() == FILES["u.data"] and (folder / default.MARKER).is_file()


def fallback(tmp_path, **kwargs):
    """default_data with source auto; the folder and the one echoed line."""
    lines = []
    folder = default.default_data(tmp_path / "cache", echo=lines.append, **kwargs)
    assert len(lines) == 1, lines
    assert folder == tmp_path / "cache" / f"synthetic-seed{default.SYNTHETIC['seed']}" and contract.is_contract(folder)
    assert lines[0].startswith("MovieLens 100K is unavailable (") and lines[0].endswith(SYNTHETIC_LINE + str(folder))
    assert not (tmp_path / "cache" / "ml-100k").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]
    return lines[0]


def test_a_wrong_archive_checksum_falls_back_to_synthetic(tmp_path, monkeypatch, server):
    monkeypatch.setenv(default.URL_ENV, f"{server[0]}/ml-100k.zip")  # the fake's MD5 is not GroupLens'
    line = fallback(tmp_path)
    assert "(archive MD5 " in line and f"differs from the pinned {default.ARCHIVE_MD5[:12]}" in line


def test_a_wrong_file_checksum_falls_back_to_synthetic(tmp_path, monkeypatch, release, server):
    pin(monkeypatch, release, files=False)
    monkeypatch.setenv(default.URL_ENV, f"{server[0]}/ml-100k.zip")
    assert "(u.data SHA-256 " in fallback(tmp_path)


def test_not_a_zip_falls_back_to_synthetic(tmp_path, monkeypatch, server, release):
    (release[0] / "page.html").write_text("<html>a captive portal</html>")
    monkeypatch.setattr(default, "ARCHIVE_MD5", hashlib.md5(b"<html>a captive portal</html>").hexdigest())
    monkeypatch.setenv(default.URL_ENV, f"{server[0]}/page.html")
    assert "(not a zip archive" in fallback(tmp_path)


def test_an_unreachable_host_falls_back_to_synthetic(tmp_path):
    assert "(connection refused)" in fallback(tmp_path)


def test_a_missing_file_falls_back_with_the_http_status(tmp_path, monkeypatch, server):
    monkeypatch.setenv(default.URL_ENV, f"{server[0]}/nothing.zip")
    assert "(HTTP 404 File not found)" in fallback(tmp_path)


def test_a_silent_host_times_out_and_falls_back(tmp_path, monkeypatch):
    with socket.socket() as silent:  # listens (the kernel completes the handshake) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        monkeypatch.setenv(default.URL_ENV, f"http://127.0.0.1:{silent.getsockname()[1]}/ml-100k.zip")
        assert "(timed out after 0.3 s)" in fallback(tmp_path, timeout_s=0.3)


def test_source_movielens_raises_a_clear_error_instead(tmp_path):
    lines = []
    with pytest.raises(default.DataUnavailable, match=r"MovieLens 100K could not be fetched from http://127\.0\.0\.1:"
                                                      r"\d+/ml-100k\.zip \(connection refused\): .*FLYWHEEL_MOVIELENS_URL.*"
                                                      r"data\.source: synthetic"):
        default.default_data(tmp_path, "movielens", echo=lines.append)
    assert lines == [] and list(tmp_path.iterdir()) == []


def test_the_synthetic_world_is_generated_once_then_reused(tmp_path, monkeypatch):
    calls = []
    write_world = synthetic.write_world
    monkeypatch.setattr(synthetic, "write_world", lambda *a, **k: calls.append(k) or write_world(*a, **k))
    lines = []
    folder = default.default_data(tmp_path, "synthetic", echo=lines.append)
    marked = (folder / default.MARKER).stat().st_mtime_ns
    assert default.default_data(tmp_path, "synthetic", echo=lines.append) == folder
    assert default.default_data(tmp_path, echo=lambda _: None) == folder  # auto, offline: the same world
    assert calls == [{"fmt": "parquet", **default.SYNTHETIC}] and (folder / default.MARKER).stat().st_mtime_ns == marked
    assert lines == [f"generated the synthetic world (600 users, 1000 items, seed 0) in {folder}"]
    assert len(datasets.load(folder).items) == default.SYNTHETIC["items"]


def test_a_synthetic_folder_without_marker_is_regenerated(tmp_path):
    (tmp_path / "synthetic-seed0").mkdir()
    (tmp_path / "synthetic-seed0" / "items.parquet").write_text("half written")
    folder = default.default_data(tmp_path, "synthetic", echo=lambda _: None)
    assert (folder / default.MARKER).is_file() and contract.read(folder).items.shape[0] == 1000


def test_an_unknown_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected one of auto, movielens, synthetic"):
        default.default_data(tmp_path, "kaggle")


def test_auto_keeps_a_cached_synthetic_world_without_trying_the_network(tmp_path, monkeypatch):
    """A champion trained on the synthetic world must not later meet MovieLens under the same IDs."""
    first = default.default_data(tmp_path, "auto", echo=lambda m: None)
    monkeypatch.setattr(default, "_download", lambda *a: pytest.fail("the network was tried"))
    lines = []
    assert default.default_data(tmp_path, "auto", echo=lines.append) == first
    assert len(lines) == 1 and "using the synthetic world cached in" in lines[0] and "data.source: movielens" in lines[0]
