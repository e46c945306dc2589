"""The default data: the history ``make demo`` (and ``flywheel import``) use when given none.

``source`` (the config's ``data.source``) decides:

- ``movielens``: MovieLens 100K from its publisher (:data:`URL`; the environment variable
  ``FLYWHEEL_MOVIELENS_URL`` overrides it, e.g. a mirror or a ``file://`` copy), checked against
  the archive MD5 GroupLens publishes (``ml-100k.zip.md5``) and the pinned SHA-256 of
  ``u.data``, ``u.item`` and ``u.user``; those and ``README`` are extracted into
  ``<cache>/ml-100k`` (read by the MovieLens adapter). Any failure raises :class:`DataUnavailable`.
- ``synthetic``: the seeded synthetic world (:mod:`datasets.synthetic`, :data:`SYNTHETIC`) as a
  Parquet contract folder, ``<cache>/synthetic-seed<seed>``.
- ``auto``: ``movielens``; when that fails (network, HTTP, checksum, archive), ``synthetic``,
  with one echoed line saying so and why. Once the synthetic world is cached (and no
  MovieLens), ``auto`` keeps it without trying the network, so a stack whose champion was
  trained on it never meets MovieLens' items under the same IDs.

A folder is complete when its marker file (:data:`MARKER`) exists. It is written last, in a
temporary folder beside the final one that is then renamed into place, so an interrupted fetch
never leaves a folder that looks complete; a complete folder is reused without network. An
``ml-100k`` folder put there by hand (no marker) is adopted when its checksums match.

MovieLens 100K is for research use under GroupLens' terms: fetched from its publisher, never shipped.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
URL_ENV = "FLYWHEEL_MOVIELENS_URL"
ARCHIVE_MD5 = "0e33842e24a9c977be4e0107933c0723"  # GroupLens' ml-100k.zip.md5
FILES_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
}
EXTRACTED = ("u.data", "u.item", "u.user", "README")  # from the archive's ml-100k/ folder
MARKER = ".complete"  # written last: the folder is complete
SYNTHETIC = {"users": 600, "items": 1000, "seed": 0}  # datasets.synthetic.world's arguments
SOURCES = ("auto", "movielens", "synthetic")
BLOCK = 1 << 16  # bytes read at a time


class DataUnavailable(RuntimeError):
    """MovieLens 100K could not be fetched or verified; ``reason`` says why in a few words."""

    def __init__(self, url: str, reason: str, failed: str = "could not be fetched"):
        self.url, self.reason = url, reason
        super().__init__(f"MovieLens 100K {failed} from {url} ({reason}): check the network (or HTTPS_PROXY), "
                         f"point {URL_ENV} at a copy of ml-100k.zip, set data.source: synthetic, or pass a "
                         "history folder (DATA=<folder>)")


def default_data(cache: Path, source: str = "auto", echo: Callable[[str], None] = print,
                 timeout_s: float = 20, synthetic: dict | None = None) -> Path:
    """The folder of the default data, fetched or generated into ``cache`` once, then reused.

    Args:
      cache: the folder the default data lives in (the config's ``data.cache``).
      source: ``auto``, ``movielens`` or ``synthetic`` (see the module docstring).
      echo: prints one line when data is fetched or generated, or when ``auto`` falls back.
      timeout_s: seconds each network operation (connect, each read) may take.
      synthetic: :func:`datasets.synthetic.world`'s arguments (default :data:`SYNTHETIC`).

    Raises:
      DataUnavailable: ``source`` is ``movielens`` and the fetch or a checksum failed.
      ValueError: an unknown ``source``.
    """
    if source not in SOURCES:
        raise ValueError(f"data source {source!r}: expected one of {', '.join(SOURCES)}")
    cache = Path(cache)
    if source == "synthetic":
        return synthetic_world(cache, echo, synthetic)
    if source == "auto" and not (cache / "ml-100k").is_dir():
        params = {**SYNTHETIC, **(synthetic or {})}
        cached = cache / f"synthetic-seed{params['seed']}"
        if _marked(cached) == params:  # sticky: a champion trained on it must not meet other items' IDs
            echo(f"using the synthetic world cached in {cached} (MovieLens 100K was unavailable when it was "
                 "made; delete that folder or set data.source: movielens to fetch MovieLens)")
            return cached
    try:
        return movielens_100k(cache, timeout_s, echo)
    except DataUnavailable as exc:
        if source == "movielens":
            raise
        folder = synthetic_world(cache, lambda _: None, synthetic)
        echo(f"MovieLens 100K is unavailable ({exc.reason}): using the synthetic world "
             f"({_described(synthetic)}) in {folder}")
        return folder


def movielens_100k(cache: Path, timeout_s: float = 20, echo: Callable[[str], None] = print) -> Path:
    """``<cache>/ml-100k``: reused when complete, else fetched, verified and extracted.

    Raises:
      DataUnavailable: the host is unreachable, the HTTP status is not 200, the archive is not
        a zip, or a checksum differs from the pinned one (nothing is left in ``cache``).
    """
    folder = Path(cache) / "ml-100k"
    if (folder / MARKER).is_file() or _adopted(folder):
        return folder
    url = os.environ.get(URL_ENV) or URL
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".ml-100k-") as tmp:
        archive, staged = Path(tmp) / "ml-100k.zip", Path(tmp) / "ml-100k"
        md5 = _download(url, archive, timeout_s)
        _verify(url, "archive MD5", md5, ARCHIVE_MD5)
        _extract(url, archive, staged)
        (staged / MARKER).write_text(json.dumps({"url": url, "md5": md5}) + "\n")
        _place(staged, folder)
    echo(f"fetched MovieLens 100K from {url} into {folder} (checksums verified)")
    return folder


def synthetic_world(cache: Path, echo: Callable[[str], None] = print, params: dict | None = None) -> Path:
    """``<cache>/synthetic-seed<seed>``: the synthetic world of ``params`` (default
    :data:`SYNTHETIC`), written once; other params rewrite it."""
    params = {**SYNTHETIC, **(params or {})}
    folder = Path(cache) / f"synthetic-seed{params['seed']}"
    if _marked(folder) == params:
        return folder
    from datasets import synthetic

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        staged = synthetic.write_world(Path(tmp) / folder.name, fmt="parquet", **params)
        (staged / MARKER).write_text(json.dumps(params) + "\n")
        _place(staged, folder)
    echo(f"generated the synthetic world ({_described(params)}) in {folder}")
    return folder


def _described(params: dict | None = None) -> str:
    p = {**SYNTHETIC, **(params or {})}
    return f"{p['users']} users, {p['items']} items, seed {p['seed']}"


def _marked(folder: Path) -> dict | None:
    """The marker's record of a complete folder, or None."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _download(url: str, path: Path, timeout_s: float) -> str:
    """Fetch ``url`` into ``path``; returns the MD5 of what was fetched (hex)."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(path, "wb") as out:
            while block := response.read(BLOCK):
                digest.update(block)
                out.write(block)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError and TimeoutError are OSErrors
        raise DataUnavailable(url, _reason(exc, timeout_s)) from exc
    return digest.hexdigest()


def _reason(exc: BaseException, timeout_s: float) -> str:
    """A few words on why a fetch failed (``timed out after 20 s``, ``HTTP 404 Not Found``, ...)."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(inner, TimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(inner, socket.gaierror):
        return f"host name not resolved: {inner.strerror or inner}"
    text = getattr(inner, "strerror", None) or str(inner) or type(inner).__name__
    return text[:1].lower() + text[1:]


def _verify(url: str, what: str, got: str, want: str) -> None:
    if got != want:
        raise DataUnavailable(url, f"{what} {got[:12]}... differs from the pinned {want[:12]}...", "failed verification")


def _extract(url: str, archive: Path, staged: Path) -> None:
    """Extract :data:`EXTRACTED` into ``staged``, checking the pinned SHA-256 of each file."""
    staged.mkdir()
    try:
        with zipfile.ZipFile(archive) as zipped:
            for name in EXTRACTED:
                try:
                    member = zipped.open(f"ml-100k/{name}")
                except KeyError:
                    raise DataUnavailable(url, f"the archive lacks ml-100k/{name}", "failed verification") from None
                with member, open(staged / name, "wb") as out:
                    shutil.copyfileobj(member, out, BLOCK)
    except zipfile.BadZipFile as exc:
        raise DataUnavailable(url, f"not a zip archive ({exc})", "failed verification") from None
    for name, want in FILES_SHA256.items():
        _verify(url, f"{name} SHA-256", _sha256(staged / name), want)


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _adopted(folder: Path) -> bool:
    """Whether ``folder`` (no marker) holds files matching the pinned checksums; if so, mark it."""
    if not all((folder / name).is_file() and _sha256(folder / name) == want for name, want in FILES_SHA256.items()):
        return False
    (folder / MARKER).write_text(json.dumps({"adopted": True}) + "\n")
    return True


def _place(staged: Path, folder: Path) -> None:
    """Rename the complete ``staged`` folder to ``folder``, replacing an incomplete one."""
    if folder.exists():
        shutil.rmtree(folder)
    try:
        os.replace(staged, folder)
    except OSError:
        if not (folder / MARKER).is_file():  # else another process completed it first: keep theirs
            raise
