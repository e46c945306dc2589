"""Benchmark results: a printed table and bench/results/<name>.json, each figure with its unit
and the baseline measured in the same run, so figures compare across commits."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.value / self.baseline


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=RESULTS.parent).stdout.strip()
    except OSError:
        return "unknown"


def report(bench: str, figures: list[Figure], notes: dict | None = None) -> Path:
    """Print the table and write bench/results/<bench>.json."""
    print(f"\n== {bench} ==")
    print(f"{'figure':<44}{'value':>12} {'unit':<12}{'baseline':>12}  {'ratio':>7}  baseline is")
    for f in figures:
        base = f"{f.baseline:12.3f}" if f.baseline is not None else f"{'':>12}"
        ratio = f"{f.ratio:6.2f}x" if f.ratio is not None else f"{'':>7}"
        print(f"{f.name:<44}{f.value:12.3f} {f.unit:<12}{base}  {ratio}  {f.baseline_name or ''}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{bench}.json"
    path.write_text(json.dumps({
        "bench": bench, "commit": _commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures], "notes": notes or {},
    }, indent=2))
    return path


def best_rate(fn, items: int, repeat: int = 5) -> float:
    """Items per second of ``fn`` (best of ``repeat`` runs: the least disturbed by noise)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best
