"""Reading the loop's Prometheus endpoints (model server, online trainer, simulator): what
``flywheel demo``, the loop benchmark and the loop tests need from a scrape.

Example::

    samples = scrape("http://127.0.0.1:8000/metrics/")
    value(samples, "flywheel_serving_feed_requests_total", status="200")
    histogram_quantiles(before, after, "flywheel_serving_feed_latency_seconds", "stage")
"""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def fetch(url: str, timeout_s: float = 5) -> list[Sample]:
    """The samples ``url`` exposes; raises ``requests.RequestException`` when it does not answer."""
    got = requests.get(url, timeout=timeout_s)
    got.raise_for_status()
    return [s for family in text_string_to_metric_families(got.text) for s in family.samples]


def scrape(url: str, timeout_s: float = 5) -> list[Sample]:
    """The samples ``url`` exposes ([] when it does not answer: a service still starting)."""
    try:
        return fetch(url, timeout_s)
    except requests.RequestException:
        return []


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def histogram_quantiles(before: list[Sample], after: list[Sample], name: str, label: str | None = None,
                        qs: tuple[int, ...] = (50, 99)) -> dict[str, dict]:
    """Per value of ``label`` (one key, ``""``, without a label): count, mean and quantiles (ms,
    linear within a bucket; ``">x"`` past the last finite bucket) of the histogram ``name``
    between two scrapes (``before=[]``: since the process started)."""
    def group(s):
        return s.labels[label] if label else ""

    def buckets(samples):
        out: dict[str, dict[float, float]] = {}
        for s in samples:
            if s.name == f"{name}_bucket":
                out.setdefault(group(s), {})[float(s.labels["le"])] = s.value
        return out

    def sums(samples, suffix):
        return {group(s): s.value for s in samples if s.name == f"{name}_{suffix}"}

    b0, b1 = buckets(before), buckets(after)
    s0, s1, c0, c1 = sums(before, "sum"), sums(after, "sum"), sums(before, "count"), sums(after, "count")
    out = {}
    for key, cum in b1.items():
        edges = sorted(cum)
        counts = [cum[e] - b0.get(key, {}).get(e, 0.0) for e in edges]
        total = c1.get(key, 0.0) - c0.get(key, 0.0)
        if total <= 0:
            continue
        row = {"count": total, "mean_ms": (s1.get(key, 0.0) - s0.get(key, 0.0)) / total * 1e3}
        for q in qs:
            target, lower, below = total * q / 100, 0.0, 0.0
            for edge, upto in zip(edges, counts):
                if upto >= target:
                    if edge == float("inf"):
                        row[f"p{q}_ms"] = f">{lower * 1e3:g}"
                    else:
                        share = (target - below) / max(upto - below, 1e-12)
                        row[f"p{q}_ms"] = round((lower + share * (edge - lower)) * 1e3, 2)
                    break
                lower, below = edge, upto
        out[key] = row
    return out
