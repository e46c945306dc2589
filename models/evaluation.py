"""Offline evaluation: AUC per task for rankers; Recall/Precision/NDCG@K per user group and
the share of items scored for candidate generators (Deep Retrieval scores a beam's items,
brute force all), with and without the items seen in training."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_per_task(labels: dict[str, np.ndarray], scores: dict[str, np.ndarray],
                 weights: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """ROC AUC of each task's scores; NaN for a task whose labels are all one class.

    ``weights`` (task -> per-example weight, e.g. 1 / sample rate) give the AUC of the
    unsampled stream; examples of weight 0 are left out of that task."""
    out = {}
    for task, y in labels.items():
        y, s = np.asarray(y), np.asarray(scores[task])
        w = np.asarray(weights[task]) if weights is not None else np.ones(len(y))
        keep = w > 0
        y, s, w = y[keep], s[keep], w[keep]
        out[task] = float(roc_auc_score(y, s, sample_weight=w)) if 0 < y.sum() < len(y) else float("nan")
    return out


GROUPS = ("all", "cold", "warm")


def top_k_metrics(retrieve: Callable[[int, int], tuple[list[int], int]], truth: dict[int, set[int]],
                  seen: dict[int, set[int]], k: int, n_items: int) -> dict[str, dict[str, float]]:
    """Recall, Precision and NDCG@K of a retriever, per user group, under the usual protocol
    and without it.

    The protocol: items the user interacted with in training are removed from the retrieved
    list (the retriever is asked for ``k + len(seen)`` items) and from their test items; users
    left without test items (all seen) count only in the ``*_raw`` figures, which take the
    first ``k`` items as retrieved, against every test item. A user is *cold* with nothing in
    ``seen``.

    Args:
      retrieve: ``(user, n) -> (up to n item IDs, best first; items scored for this query)``.
      truth: user -> items they interacted with in the test period.
      seen: user -> items they interacted with in training.
      n_items: catalogue size (for the share of it each query scored).

    Returns:
      ``{group: {f"recall@{k}", f"precision@{k}", f"ndcg@{k}", the same + "_raw", "users",
      "share_scored"}}`` for the groups all, cold and warm (a group without users: NaN).
    """
    rows: dict[str, list[dict[str, float]]] = {g: [] for g in GROUPS}
    for user, items in truth.items():
        mine = seen.get(user, set())
        top, n_scored = retrieve(user, k + len(mine))
        row = {"share_scored": n_scored / n_items}
        for suffix, listed, wanted in (("", [i for i in top if i not in mine][:k], items - mine),
                                       ("_raw", list(top[:k]), items)):
            if not wanted:
                row.update({f"{m}@{k}{suffix}": np.nan for m in ("recall", "precision", "ndcg")})
                continue
            gains = [1 / np.log2(r + 2) for r, i in enumerate(listed) if i in wanted]
            ideal = sum(1 / np.log2(r + 2) for r in range(min(len(wanted), k)))
            row.update({f"recall@{k}{suffix}": len(gains) / len(wanted), f"precision@{k}{suffix}": len(gains) / k,
                        f"ndcg@{k}{suffix}": sum(gains) / ideal})
        if np.isnan(row[f"recall@{k}_raw"]):
            continue
        rows["all"].append(row)
        rows["warm" if mine else "cold"].append(row)
    out = {}
    for group, got in rows.items():
        keys = [f"{m}@{k}{s}" for s in ("", "_raw") for m in ("recall", "precision", "ndcg")] + ["share_scored"]
        out[group] = {key: float(np.nanmean([r[key] for r in got])) if any(np.isfinite(r[key]) for r in got)
                      else float("nan") for key in keys}
        out[group]["users"] = len(got)
    return out


def flat(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """:func:`top_k_metrics` as one level, MLflow-safe: ``recall_at_50`` (all users),
    ``recall_at_50_cold``, ``recall_at_50_raw_warm``, ..."""
    out = {}
    for group, figures in metrics.items():
        for key, value in figures.items():
            name = key.replace("@", "_at_") + ("" if group == "all" else f"_{group}")
            out[name] = value
    return out
