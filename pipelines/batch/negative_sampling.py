"""Spark negative sampling: landed examples of some days -> the training set of those days.

Submitted by the ``daily_retrain`` DAG (SparkSubmitOperator); by hand (SPARK_CONF_DIR: the
Kerberos login of a secure HDFS, ``flywheel.spark.spark_env``)::

    PYTHONPATH=. HADOOP_CONF_DIR=.flywheel/hdfs/conf SPARK_CONF_DIR=.flywheel/spark/conf .venv/ml/bin/spark-submit --master 'local[2]' \\
        pipelines/batch/negative_sampling.py --examples hdfs://127.0.0.1:8020/flywheel/examples \\
        --output hdfs://127.0.0.1:8020/flywheel/training --dates 2026-11-23 --rates click=0.5

1. **Ranking negatives, per task**: an example with no positive label is kept for task ``t``
   with rate ``online_t * batch_t`` (its landed rate times ``--rates``), decided by the same
   key hash as the joiner (``streaming.sampling``), so the batch set is nested in the online
   one; ``sample_rates`` on every row says each task's rate (0: not kept for that task).
2. **Retrieval negatives, popularity-corrected**: item popularity ``q_i ~ clicks_i^0.75`` over
   the days read; each click gets ``--retrieval-negatives`` items drawn from ``q``
   (``retrieval_negatives``) with ``log q`` of each (``retrieval_log_q``) and of its own item
   (``item_log_q``), so a sampled softmax can subtract ``log q`` (logQ correction) and
   popular items are not over-penalised. Draws are hashes of the example key: a re-run
   draws the same.
3. **Idempotent**: ``<output>/dt=D`` is replaced for each day written (dynamic partition
   overwrite); other days are untouched.

Prints one ``SAMPLING {json}`` line per run: rows in, rows out, kept per task.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the driver; executors get PYTHONPATH

from streaming.sampling import parse_rates, uniform  # noqa: E402
from streaming.schemas import TASKS  # noqa: E402

POPULARITY_POWER = 0.75
EXTRA = "retrieval_negatives ARRAY<BIGINT>, retrieval_log_q ARRAY<DOUBLE>, item_log_q DOUBLE"


def batch_rates(cfg) -> dict[str, float]:
    """The configured batch rate of each task (``batch.negative_rate`` and its overrides)."""
    return {t: cfg.batch.negative_rates.get(t, cfg.batch.negative_rate) for t in TASKS}


def sample_rows(pdf: pd.DataFrame, batch_rates: dict[str, float]) -> pd.DataFrame:
    """Down-sample the negatives of one pandas chunk; every row gets explicit ``sample_rates``."""
    keep, rates_out, rate_out = [], [], []
    for rid, item, labels, rate, rates in zip(pdf["request_id"], pdf["item_id"], pdf["labels"],
                                              pdf["sample_rate"], pdf["sample_rates"]):
        online = {t: (rates[t] if rates is not None else rate) for t in TASKS}
        if any(labels[t] for t in TASKS):  # positives are never sampled; their 0-label tasks keep 1
            keep.append(True)
            rates_out.append({t: online[t] for t in TASKS})
            rate_out.append(rate)
            continue
        u = uniform(f"{rid}|{item}")
        new = {t: online[t] * batch_rates[t] for t in TASKS}
        kept = {t: (r if u < r else 0.0) for t, r in new.items()}
        keep.append(any(kept.values()))
        rates_out.append(kept)
        rate_out.append(max(kept.values()))
    out = pdf.assign(sample_rates=rates_out, sample_rate=rate_out)
    return out[np.array(keep, dtype=bool)]


def popularity(items: np.ndarray, clicks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items sorted, their cumulative distribution, their log q) with q ~ clicks^0.75."""
    order = np.argsort(items)
    weights = clicks[order].astype(np.float64) ** POPULARITY_POWER
    q = weights / weights.sum()
    return items[order], np.cumsum(q), np.log(q)


def draw_negatives(pdf: pd.DataFrame, items: np.ndarray, cdf: np.ndarray, log_q: np.ndarray,
                   k: int) -> pd.DataFrame:
    """``k`` popularity-drawn items (hash-seeded) and log q for each click of one chunk."""
    negatives, neg_log_q, own_log_q = [], [], []
    for rid, item, labels in zip(pdf["request_id"], pdf["item_id"], pdf["labels"]):
        if not labels["click"] or k == 0:
            negatives.append(None), neg_log_q.append(None), own_log_q.append(None)
            continue
        draws = np.array([uniform(f"{rid}|{item}#{j}") for j in range(k)])
        at = np.minimum(np.searchsorted(cdf, draws, side="right"), len(items) - 1)
        negatives.append(items[at].tolist())
        neg_log_q.append(log_q[at].tolist())
        own = np.searchsorted(items, item)
        own_log_q.append(float(log_q[own]) if own < len(items) and items[own] == item else None)
    return pdf.assign(retrieval_negatives=negatives, retrieval_log_q=neg_log_q, item_log_q=own_log_q)


def run(spark, examples: str, output: str, dates: list[str], batch_rates: dict[str, float], k: int) -> dict:
    from pyspark.sql import functions as F

    paths = [f"{examples}/dt={d}" for d in dates]
    df = spark.read.option("basePath", examples).parquet(*paths).drop("hour")
    rows_in = df.count()
    if rows_in == 0:
        raise SystemExit(f"no landed examples in {paths}: run the backfill or check the joiner's landing")
    counts = (df.where(F.col("labels.click") == 1).groupBy("item_id").count().toPandas())
    items, cdf, log_q = popularity(counts["item_id"].to_numpy(np.int64), counts["count"].to_numpy())
    schema = df.schema

    def sample(chunks):
        for pdf in chunks:
            yield sample_rows(pdf, batch_rates)  # same columns; sample_rates now always set

    def negatives(chunks):
        for pdf in chunks:
            yield draw_negatives(pdf, items, cdf, log_q, k)

    out_schema = f"{', '.join(f'`{f.name}` {f.dataType.simpleString()}' for f in schema.fields)}, {EXTRA}"
    final = df.mapInPandas(sample, schema).mapInPandas(negatives, out_schema)
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    final.write.mode("overwrite").partitionBy("dt").parquet(output)
    # one scan of what was written: rows, and rows kept for each task
    written = spark.read.parquet(*[f"{output}/dt={d}" for d in dates]).agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.sum((F.col(f"sample_rates.{t}") > 0).cast("long")).alias(t) for t in TASKS]).first()
    stats = {"dates": dates, "rows_in": rows_in, "rows_out": written["rows"], "items": len(items),
             "kept_for": {t: int(written[t] or 0) for t in TASKS},
             "batch_rates": batch_rates, "retrieval_negatives": k}
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", required=True, help="landed examples root (dt=/hour= partitions)")
    parser.add_argument("--output", required=True, help="training set root (dt= partitions)")
    parser.add_argument("--dates", required=True, help="comma-separated YYYY-MM-DD")
    parser.add_argument("--rates", default="", help="batch negative rates, task=rate,... (others: --default-rate)")
    parser.add_argument("--default-rate", type=float, default=1.0)
    parser.add_argument("--retrieval-negatives", type=int, default=5)
    args = parser.parse_args(argv)
    rates = parse_rates(args.rates, TASKS, args.default_rate)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("flywheel-negative-sampling").getOrCreate()
    try:
        stats = run(spark, args.examples, args.output, args.dates.split(","), rates, args.retrieval_negatives)
    finally:
        spark.stop()
    print("SAMPLING " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
