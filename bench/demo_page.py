"""Demo page benchmark (issue 10): page load while the simulator runs, and the freshness a
person feels, from a click on Like to a feed in which that user's embedding has changed.

Runs on the bench stack as ``bench/loop.py`` does (Kafka, HDFS, Flink, MLflow, the parameter
servers; a champion bootstrapped when there is none; the joiner; the model server, online
trainer and simulator), in headless Chromium (Debian's, driven by Playwright). What the run
started it stops again.

1. **Page load** (p50/p95, ``--loads`` loads): from navigation to the panels drawn with their
   first figures, while the simulator sends ``--sim-rate`` feeds/s. Baseline: the same loads
   with the simulator stopped.
2. **Like -> changed feed** (p50/p99, ``--likes`` trials): a new user on the page, Like on the
   first item, then the time until the page shows a feed fetched after it saw the user's row
   change on the serving PS (the page checks the row every second and refetches the feed at
   once, so up to ~1 s of this is the page's polling). Baseline, interleaved: the simulator's
   freshness probe (the same action, then the serving PS polled directly every 50 ms).

Run: ``make bench`` (or ``FLYWHEEL_CONFIG=config/bench.yaml .venv/ml/bin/python bench/demo_page.py``).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("FLYWHEEL_CONFIG", "config/bench.yaml")

from playwright.sync_api import sync_playwright  # noqa: E402

from bench.loop import bench_stack, echo, pct, wait_for  # noqa: E402
from bench.report import Figure, report  # noqa: E402
from flywheel.prometheus import scrape, value  # noqa: E402
from flywheel.stack import control  # noqa: E402
from paramserver.client import PSClient  # noqa: E402
from simulator.freshness import probe_once  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
FIRST_FIGURES = "document.querySelectorAll('#panels .panel').length >= 6"


def page_loads(browser, url: str, n: int, timeout_s: float = 30) -> list[float]:
    """Seconds per load; a load not drawn within ``timeout_s`` counts as ``timeout_s``."""
    out = []
    for _ in range(n):
        page = browser.new_page()
        started = time.perf_counter()
        try:
            page.goto(f"{url}/demo")
            page.wait_for_function(FIRST_FIGURES, timeout=timeout_s * 1000)
            out.append(time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a page that did not draw: counted, and said why
            echo(f"  a load did not draw its panels within {timeout_s:.0f}s: {str(exc)[:200]}")
            out.append(timeout_s)
        page.close()
    return out


def like_to_feed(browser, url: str, ps: PSClient, n: int, timeout_s: float = 60) -> tuple[list[float], list[float], int]:
    """(page samples s, probe samples s, page timeouts)."""
    page_s, probe_s, timeouts, http = [], [], 0, requests.Session()
    page = browser.new_page()
    page.goto(f"{url}/demo")
    for trial in range(n):
        page.click("#new-user")
        page.wait_for_function("document.querySelectorAll('#feed li').length > 0", timeout=30_000)
        page.wait_for_function("document.querySelector('#embedding').dataset.hasRow === '0'", timeout=30_000)
        changed, request = (page.get_attribute("#embedding", "data-changed-at"),
                            page.get_attribute("#feed", "data-request-id"))
        started = time.perf_counter()
        page.click('#feed li button[data-action="like"]')
        try:
            page.wait_for_function("was => (document.querySelector('#embedding').dataset.changedAt || null) !== was",
                                   arg=changed or None, timeout=timeout_s * 1000)
            page.wait_for_function("was => document.querySelector('#feed').dataset.requestId !== was",
                                   arg=request, timeout=timeout_s * 1000)
            page_s.append(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - counted, and weighs as the timeout in the percentiles
            timeouts += 1
            page_s.append(timeout_s)
        got = probe_once(http, url, ps, 730_000_000 + random.randrange(10**6), timeout_s=timeout_s)
        if got is not None:
            probe_s.append(got)
        echo(f"  trial {trial + 1}: page {page_s[-1]:.2f}s, probe {got if got is None else round(got, 2)}s")
    page.close()
    return page_s, probe_s, timeouts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a history folder (default: the default data, as make demo)")
    parser.add_argument("--sim-rate", type=float, default=5, help="simulator feed requests/s")
    parser.add_argument("--loads", type=int, default=40)
    parser.add_argument("--likes", type=int, default=15)
    parser.add_argument("--warmup-s", type=float, default=20, help="simulator traffic before the first load")
    args = parser.parse_args()
    began = time.monotonic()
    with bench_stack(args.data, args.sim_rate, "demo") as run:
        cfg, url = run.cfg, run.url
        trainer = f"http://{cfg.stack.host}:{cfg.online.metrics_port}/metrics"
        wait_for(lambda: value(scrape(trainer), "flywheel_online_champion_version") > 0, 240, "the trainer on the champion")
        control.up(cfg, only=["simulator"], echo=echo)
        time.sleep(args.warmup_s)
        ps = PSClient.from_config(cfg, role="serving")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page_loads(browser, url, 3)  # warm-up: the browser's first start, caches
            echo(f"page load: {args.loads} loads, simulator at {args.sim_rate}/s")
            busy = page_loads(browser, url, args.loads)
            echo(f"  p50 {pct(busy, 50, 1e3):.0f} ms p95 {pct(busy, 95, 1e3):.0f} ms")
            echo(f"like -> changed feed: {args.likes} trials (freshness probes interleaved)")
            felt, probes, timeouts = like_to_feed(browser, url, ps, args.likes)
            control.stop(cfg, ["simulator"])
            time.sleep(3)
            idle = page_loads(browser, url, args.loads)
            echo(f"page load, simulator stopped: p50 {pct(idle, 50, 1e3):.0f} ms p95 {pct(idle, 95, 1e3):.0f} ms")
            browser.close()
        ps.close()
    figures = [
        Figure("demo page load p50 (to panels drawn)", pct(busy, 50, 1e3), "ms", pct(idle, 50, 1e3),
               "simulator stopped", higher_is_better=False),
        Figure("demo page load p95 (to panels drawn)", pct(busy, 95, 1e3), "ms", pct(idle, 95, 1e3),
               "simulator stopped", higher_is_better=False),
        Figure("like -> feed with changed embedding p50", pct(felt, 50), "s", pct(probes, 50) if probes else None,
               "freshness probe p50", higher_is_better=False),
        Figure("like -> feed with changed embedding p99", pct(felt, 99), "s", pct(probes, 99) if probes else None,
               "freshness probe p99", higher_is_better=False),
    ]
    notes = {"data": str(run.data), "data_source": run.data_source, "simulator_rate": args.sim_rate, "loads": args.loads,
             "likes": args.likes, "like_timeouts": timeouts, "like_samples_s": [round(x, 3) for x in felt],
             "probe_samples_s": [round(x, 3) for x in probes], "runtime_s": round(time.monotonic() - began, 1),
             "page_polls_embedding_every_s": 1.0}
    path = report("demo_page", figures, notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
