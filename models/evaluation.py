"""Offline evaluation: AUC per task for rankers; Recall/Precision@K and the share of items
scored for candidate generators (Deep Retrieval scores a beam's items, brute force all)."""

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


def recall_precision_at_k(retrieve: Callable[[int, int], tuple[list[int], int]], truth: dict[int, set[int]],
                          k: int, n_items: int) -> dict[str, float]:
    """Mean Recall@K and Precision@K over users with held-out items, and the mean share of the
    catalogue each query scored.

    Args:
      retrieve: ``(user, k) -> (top-k item ids, items scored for this query)``.
      truth: user -> items they interacted with in the test period.
      n_items: catalogue size (for the share scored).
    """
    recalls, precisions, scored = [], [], []
    for user, items in truth.items():
        if not items:
            continue
        top, n_scored = retrieve(user, k)
        hits = len(set(top[:k]) & items)
        recalls.append(hits / len(items))
        precisions.append(hits / k)
        scored.append(n_scored / n_items)
    return {f"recall@{k}": float(np.mean(recalls)), f"precision@{k}": float(np.mean(precisions)),
            "share_scored": float(np.mean(scored)), "users": len(recalls)}
