"""What HDFS's door costs (kerberos.enabled): WebHDFS from Python over TLS with SPNEGO, against
the same HDFS without the door, measured in the same run.

Starts HDFS alone (and, for the secure run, its KDC) twice on the bench ports, one after the
other, each in its own state dir under ``.flywheel-bench/``: first plain (the baseline), then
secure. In each it times, with the client every Flywheel program uses (``flywheel.hdfs.webhdfs``):

1. **Small files** (``--files`` files of 4 KiB): write, then read each back; files per second.
   Each file is a NameNode request and a DataNode redirect, so this is the per-request cost
   (TLS, the SPNEGO login once per session, a delegation token on each redirect).
2. **One large file** (``--mib`` MiB): write and read throughput, MiB/s: the cost of TLS on the
   bytes.
3. **A new client's first request**: a fresh filesystem (a new session: the TLS handshake and,
   secure, the 401 and SPNEGO exchange; the process's tickets stay cached in memory, so no KDC
   trip), median of ``--fresh`` tries.

Run: ``make bench`` (or ``.venv/ml/bin/python bench/hdfs_door.py``). What it started it stops.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("FLYWHEEL_CONFIG", "config/bench.yaml")

from bench.report import Figure, report  # noqa: E402
from flywheel.config import load_config  # noqa: E402
from flywheel.hdfs import webhdfs  # noqa: E402
from flywheel.stack import control  # noqa: E402


def variant(secure: bool):
    state = load_config().stack.root / ("door-secure" if secure else "door-plain")
    return load_config(environ={**os.environ, "FLYWHEEL__STACK__STATE_DIR": str(state),
                                "FLYWHEEL__KERBEROS__ENABLED": str(secure).lower()})


def measure(cfg, files: int, mib: int, fresh: int) -> dict[str, float]:
    fs, root = webhdfs(cfg), f"{cfg.hdfs.root}/bench-door"
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    payload = os.urandom(4096)
    started = time.perf_counter()
    for i in range(files):
        with fs.open(f"{root}/small-{i}", "wb") as f:
            f.write(payload)
    written = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(files):
        assert fs.cat(f"{root}/small-{i}") == payload
    read = time.perf_counter() - started
    big = os.urandom(mib << 20)
    started = time.perf_counter()
    with fs.open(f"{root}/large", "wb", block_size=8 << 20) as f:
        f.write(big)
    big_written = time.perf_counter() - started
    started = time.perf_counter()
    assert fs.cat(f"{root}/large") == big
    big_read = time.perf_counter() - started
    firsts = []
    for _ in range(fresh):
        client = webhdfs(cfg, fresh=True)
        started = time.perf_counter()
        client.ls(root, detail=False)
        firsts.append(time.perf_counter() - started)
    fs.rm(root, recursive=True)
    return {"small_write": files / written, "small_read": files / read, "large_write": mib / big_written,
            "large_read": mib / big_read, "first_request_ms": statistics.median(firsts) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--fresh", type=int, default=15)
    args = parser.parse_args()
    results = {}
    for secure in (False, True):
        cfg = variant(secure)
        print(f"[bench] HDFS {'with' if secure else 'without'} its door, state {cfg.stack.root}", flush=True)
        control.up(cfg, only=["hdfs"], echo=lambda msg: print(f"[bench]   {msg}", flush=True))
        try:
            measure(cfg, 10, 1, 1)  # warm-up: JIT, first block, first login
            results[secure] = measure(cfg, args.files, args.mib, args.fresh)
        finally:
            control.down(cfg)
    plain, secure = results[False], results[True]
    report("hdfs_door", [
        Figure("small files written (4 KiB), secure", secure["small_write"], "files/s", plain["small_write"], "plain"),
        Figure("small files read (4 KiB), secure", secure["small_read"], "files/s", plain["small_read"], "plain"),
        Figure(f"one {args.mib} MiB file written, secure", secure["large_write"], "MiB/s", plain["large_write"], "plain"),
        Figure(f"one {args.mib} MiB file read, secure", secure["large_read"], "MiB/s", plain["large_read"], "plain"),
        Figure("a new client's first request, secure", secure["first_request_ms"], "ms", plain["first_request_ms"],
               "plain", higher_is_better=False),
    ], notes={"files": args.files, "mib": args.mib, "fresh": args.fresh,
              "client": "flywheel.hdfs.webhdfs (fsspec WebHDFS; secure: TLS + SPNEGO, requests-gssapi)"})


if __name__ == "__main__":
    main()
