"""experiments/movielens.py end to end on generated MovieLens data with tiny settings: it
trains every model, prints its tables and writes its JSON and plot."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def test_movielens_experiment_runs_on_tiny_generated_data(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(u, int(rng.integers(1, 41)), int(rng.integers(1, 6)), 1000 + n)
            for n, u in enumerate(rng.integers(1, 31, size=600))]
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    out = subprocess.run([sys.executable, str(REPO / "experiments/movielens.py"), "--data", str(tmp_path),
                          "--epochs", "1", "--width", "4", "--beam", "4", "--paths", "2", "--k", "5",
                          "--results", str(tmp_path / "results")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "deep_retrieval" in out.stdout and "hashing trick" in out.stdout
    results = json.loads((tmp_path / "results" / "movielens.json").read_text())
    dr, tt = results["retrieval"]["deep_retrieval"], results["retrieval"]["two_tower"]
    assert 0 < dr["share_scored"] <= 1 and tt["share_scored"] == 1.0
    assert all(0 <= v <= 1 for r in results["ranking"].values() for v in r["auc"].values())
    assert (tmp_path / "results" / "movielens.png").stat().st_size > 0
