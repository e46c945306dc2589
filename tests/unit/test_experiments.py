"""The experiments end to end on generated MovieLens data with tiny settings: each trains its
models, prints its tables and writes its JSON and plot (movielens.py; online_vs_batch.py,
whose never-synced arm must score exactly as the batch model)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def test_movielens_experiment_runs_on_tiny_generated_data(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(u, int(rng.integers(1, 41)), int(rng.integers(1, 6)), 880_000_000 + n)
            for n, u in enumerate(rng.integers(1, 31, size=600))]
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    out = subprocess.run([sys.executable, str(REPO / "experiments/movielens.py"), "--data", str(tmp_path),
                          "--epochs", "1", "--width", "4", "--beam", "4", "--paths", "2", "--k", "5", "--seeds", "0,1",
                          "--results", str(tmp_path / "results")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "deep_retrieval" in out.stdout and "hashing trick" in out.stdout and "popular (30 days)" in out.stdout
    results = json.loads((tmp_path / "results" / "movielens.json").read_text())
    retrieval = results["retrieval"]
    assert set(retrieval) == {"popular (30 days)", "popular (all training)", "EASE (l2=200)", "deep_retrieval",
                              "two_tower"}
    dr, tt = retrieval["deep_retrieval"], retrieval["two_tower"]
    figures = lambda run: [run[m] for m in ("recall_at_5_raw", "ndcg_at_5_raw", "share_scored")]  # noqa: E731
    assert len(dr["runs"]) == 2 and figures(dr["runs"][0]) != figures(dr["runs"][1])  # one model per seed
    assert 0 < dr["mean"]["share_scored"] <= 1 and tt["mean"]["share_scored"] == 1.0
    assert retrieval["popular (30 days)"]["std"]["recall_at_5"] == 0  # a baseline: the same in every seed
    for r in retrieval.values():
        assert r["mean"]["users"] == r["mean"]["users_cold"] + r["mean"]["users_warm"] > 0
        assert all(0 <= r["mean"][f"{m}_at_5{s}"] <= 1 for m in ("recall", "precision", "ndcg") for s in ("", "_raw"))
    ranking = results["ranking"]
    assert set(ranking) == {"item popularity", "MMoE collisionless", "MMoE hashing trick (1/4 space)"}
    assert all(0 <= v <= 1 for r in ranking.values() for run in r["runs"] for v in run["auc"].values())
    assert (tmp_path / "results" / "movielens.png").stat().st_size > 0


def test_online_vs_batch_experiment_runs_on_tiny_generated_data(tmp_path):
    from datasets.movielens_sample import write_movielens

    write_movielens(tmp_path / "ml", users=30, items=25, ratings_per_user=10, days=3)
    out = subprocess.run([sys.executable, str(REPO / "experiments/online_vs_batch.py"), "--data", str(tmp_path / "ml"),
                          "--out", str(tmp_path / "results"), "--days", "3", "--eval-days", "1", "--negatives", "1",
                          "--batch-size", "64", "--micro-batch", "8", "--max-span", "60", "--intervals", "0,1m,2d"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Δ click vs batch" in out.stdout
    results = json.loads((tmp_path / "results" / "online_vs_batch.json").read_text())
    (day,) = results["days"]
    arms = day["arms"]
    assert list(arms) == ["batch", "0", "1m", "2d"]
    assert arms["batch"]["syncs"] == 0 and arms["0"]["syncs"] == day["micro_batches"] >= arms["1m"]["syncs"] > 0
    for task in ("click", "like"):
        assert arms["2d"]["auc"][task] == arms["batch"]["auc"][task]  # never synced: the batch model's scores
    assert arms["0"]["auc"]["click"] != arms["batch"]["auc"]["click"]  # synced every micro-batch: learned online
    assert all(0 <= v <= 1 for a in arms.values() for v in a["auc"].values())
    assert {r["arm"] for r in results["summary"]} == set(arms)
    assert (tmp_path / "results" / "online_vs_batch.png").stat().st_size > 0
    assert "| 1m |" in (tmp_path / "results" / "online_vs_batch.md").read_text()
