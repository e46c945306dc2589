"""Monolith's Table 2 on a history (MovieLens, the synthetic world, any contract folder): online training with a sparse sync interval vs the daily
batch model, replayed in event time in one process (in-process tables, no stack).

    nice -n 10 .venv/ml/bin/python experiments/online_vs_batch.py [--data <folder>]

For each evaluation day D (the last ``--eval-days`` days; results are their mean):

- **Batch**: the MMoE ranker trained on every day before D (the daily retrain's code:
  ``RankingTrainer`` over tables shaped like the training PS's, ``tables_for``), frozen
  through D.
- **Online, sync interval S**: the batch model is handed over (tables through a snapshot, as
  the PS handover does); the training copy keeps learning on D's examples in event-time order,
  dense weights frozen as in production (``online.train_dense: false``; ``--train-dense``
  trains them and ships them at each sync). Each serving copy (serving-role tables, its own
  dense model) gets the training copy's touched rows (IDs from ``export_delta`` after every
  step, current rows via ``import_rows``) at the first micro-batch at or after each multiple
  of S event seconds. Every example is scored by the serving copy *before* the training copy
  learns from it (progressive validation); the AUC on D comes from those scores.

Choices, and why:

- Time is squeezed into ``--days`` days (default 14) by ``pipelines.batch.backfill.retime``,
  as ``make demo`` lands ml-100k: it is the stack's data, and a day holds ~7k ratings (~35k
  examples), enough for a stable AUC (ml-100k's real days hold 36 to 3,550 ratings). S is in
  squeezed time: 215 real days into 14 make 1 s ~15 real s (5 h ~3.2 real days).
  ``--days 0`` keeps the real spacing.
- Micro-batches: ratings come in bursts with identical timestamps (a rating and its sampled
  negatives share one), so the day is cut into micro-batches of at most ``--micro-batch``
  examples spanning at most ``--max-span`` s, never splitting a timestamp; all of one are
  scored before any is trained on.
- The training copy's path does not depend on S (serving never feeds back): one training pass
  serves every interval. A serving copy is constant between syncs, so what it served is scored
  in one call just before it changes: the same scores, far fewer calls.
- Step size: the loss is a mean over the batch, so with one table optimizer (Adagrad, lr 0.05)
  a micro-batch of ~13 examples moves each row ~40x further per example than a retrain batch
  of 512 (on ml-100k: ~0.05 AUC lost). ``--step-scale batch`` (default) scales its row
  gradients by size / ``--batch-size``, so an example weighs what it did in the retrain;
  ``mean`` pushes them as the online trainer does (it polls up to ``online.batch_size``).
- Examples are ``datasets.history.examples``: labels from the history's actions; its
  impressions are the negatives, or without them (MovieLens) ``--negatives`` items per
  positive the user never engaged with, all labels 0. Only the ranker
  learns online (the retriever's gradients on the shared tables are left out).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402,F401  (TF environment first)
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from datasets import load, resolve  # noqa: E402
from datasets.history import examples  # noqa: E402
from flywheel.config import load_config  # noqa: E402
from models.bundle import feature_width  # noqa: E402
from models.evaluation import auc_per_task  # noqa: E402
from models.features import DENSE, HISTORY, RANK_SLOTS, RANK_TASKS  # noqa: E402
from models.mmoe import MMoE, task_weights  # noqa: E402
from models.ranking import RankingTrainer  # noqa: E402
from models.sparse import FrozenDense, LocalTables, push_gradients  # noqa: E402
from paramserver.service import build_tables  # noqa: E402
from pipelines.batch.backfill import retime  # noqa: E402
from pipelines.batch.retrain import tables_for  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = tuple(RANK_TASKS)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
END = date(2000, 1, 31)  # any fixed day: only spacing and day boundaries matter


def parse_interval(text: str) -> float:
    """``"5s"``, ``"1m"``, ``"30m"``, ``"5h"`` (or plain seconds) -> seconds; 0 syncs every micro-batch."""
    text = text.strip().lower()
    seconds = float(text[:-1]) * UNITS[text[-1]] if text[-1] in UNITS else float(text)
    if seconds < 0:
        raise ValueError(f"sync interval {text!r} is negative: give e.g. 5s, 1m, 30m, 5h")
    return seconds


def days_of(data, days: float, negatives: int, seed: int) -> list[list[dict]]:
    """Every event's examples (histories continuous over the whole replay), grouped by day."""
    events = retime(data.events, END, days or None)
    rows = examples(data, events, negatives=negatives, history=HISTORY, seed=seed)
    first = rows[0]["event_time"] // 86_400_000
    out: list[list[dict]] = [[] for _ in range(rows[-1]["event_time"] // 86_400_000 - first + 1)]
    for e in rows:
        out[e["event_time"] // 86_400_000 - first].append(e)
    return out


def micro_batches(rows: list[dict], size: int, span_s: float) -> list[list[dict]]:
    """Time-ordered ``rows`` cut into batches of <= ``size`` examples spanning <= ``span_s``
    seconds, never splitting one timestamp (so one burst may exceed ``size``)."""
    out, cur = [], []
    for e in rows:
        t = e["event_time"]
        if cur and t != cur[-1]["event_time"] and (len(cur) >= size or t - cur[0]["event_time"] > span_s * 1000):
            out.append(cur)
            cur = []
        cur.append(e)
    return out + [cur] if cur else out


def new_ranker(source: LocalTables, dims: dict[str, int], optimizer=None) -> RankingTrainer:
    """A ranker over ``source`` with every dense weight created (as models.bundle.build does)."""
    ranker = RankingTrainer(MMoE(tasks=TASKS), RANK_SLOTS, DENSE, source, optimizer)
    width = feature_width(RANK_SLOTS, dims, DENSE)
    ranker.model({"features": tf.zeros((1, width)), "position": tf.zeros((1,), tf.int32)}, training=True)
    return ranker


def train_batch_model(cfg, rows: list[dict], args) -> tuple[RankingTrainer, dict]:
    """The daily retrain: tables shaped like the training PS's, ``args.epochs`` shuffled passes."""
    tables = tables_for(cfg)
    keras.utils.set_random_seed(args.seed)
    ranker = new_ranker(LocalTables(tables), {n: t.dim for n, t in tables.items()},
                        keras.optimizers.Adam(args.learning_rate))
    rng = np.random.default_rng(args.seed)
    for _ in range(args.epochs):
        order = rng.permutation(len(rows))
        for start in range(0, len(rows), args.batch_size):
            ranker.train_batch([rows[i] for i in order[start:start + args.batch_size]])
    return ranker, tables


class ServingCopy:
    """Serving tables + dense model fed from the training copy every ``interval`` event seconds
    (``inf``: never, the frozen batch model); scores what it serves (progressive validation).

    Args:
      interval: sync period in event seconds (0: before every micro-batch; inf: never).
      snapshots: table name -> snapshot bytes of the handed-over batch tables.
      weights: the batch model's dense weights.
      day_start_s: 00:00 of the evaluation day (unix s); syncs fall on multiples of ``interval``.
    """

    def __init__(self, name: str, interval: float, cfg, snapshots: dict[str, bytes], weights: list, day_start_s: int):
        self.name, self.interval = name, interval
        self.tables = build_tables(cfg, "serving")
        for table_name, table in self.tables.items():
            table.restore(io.BytesIO(snapshots[table_name]))
        self.ranker = new_ranker(LocalTables(self.tables), {n: t.dim for n, t in self.tables.items()})
        self.ranker.model.set_weights(weights)
        self.next_sync = -math.inf if interval == 0 else day_start_s + interval  # inf: never
        self.touched: dict[str, list[np.ndarray]] = {n: [] for n in self.tables}
        self.removed: dict[str, list[np.ndarray]] = {n: [] for n in self.tables}
        self.waiting: list[dict] = []
        self.scores: dict[str, list[np.ndarray]] = {t: [] for t in TASKS}
        self.syncs = self.rows_shipped = 0

    def note(self, deltas: dict) -> None:
        """Remember the rows one training step touched (and removed), for the next sync."""
        if self.interval < math.inf:
            for name, delta in deltas.items():
                self.touched[name].append(delta.ids)
                self.removed[name].append(delta.tombstones)

    def maybe_sync(self, now_s: float, training: dict, train_model, ship_dense: bool) -> None:
        """Sync if a multiple of the interval has passed: score what was served, then take the
        training copy's current rows for every ID touched since the last sync."""
        if now_s < self.next_sync:
            return
        self.flush()
        for name, parts in self.touched.items():
            if self.removed[name]:
                self.tables[name].remove(np.concatenate(self.removed[name]))
            ids = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
            if len(ids):  # an ID removed since reads zeros on both sides
                self.tables[name].import_rows(ids, training[name].lookup(ids))
            self.touched[name], self.removed[name] = [], []
            self.rows_shipped += len(ids)
        if ship_dense:
            self.ranker.model.set_weights(train_model.get_weights())
        self.syncs += 1
        if self.interval > 0:
            self.next_sync = (math.floor(now_s / self.interval) + 1) * self.interval

    def flush(self) -> None:
        for start in range(0, len(self.waiting), 2048):
            for t, s in self.ranker.score(self.waiting[start:start + 2048]).items():
                self.scores[t].append(s)
        self.waiting = []

    def auc(self, rows: list[dict]) -> dict[str, float]:
        self.flush()
        labels = {t: np.array([e["labels"][t] for e in rows]) for t in TASKS}
        scores = {t: np.concatenate(v) for t, v in self.scores.items()}
        return auc_per_task(labels, scores, task_weights(rows, TASKS))


def replay_day(cfg, history: list[dict], day: list[dict], intervals: dict[str, float], args) -> dict:
    """Batch model on ``history``, then the online replay of ``day``; AUC per arm."""
    started = time.perf_counter()
    batch, training = train_batch_model(cfg, history, args)
    trained_s = time.perf_counter() - started
    snapshots = {}
    for name, table in training.items():
        buffer = io.BytesIO()
        table.snapshot(buffer)
        snapshots[name] = buffer.getvalue()
        table.export_delta()  # the handover: serving starts from this state
    weights = batch.model.get_weights()
    day_start = day[0]["event_time"] // 86_400_000 * 86_400
    periods = {"batch": math.inf, **intervals}
    copies = [ServingCopy(name, s, cfg, snapshots, weights, day_start) for name, s in periods.items()]
    online = RankingTrainer(batch.model, RANK_SLOTS, DENSE, batch.source,
                            keras.optimizers.Adam(args.learning_rate) if args.train_dense else FrozenDense())
    micro = micro_batches(day, args.micro_batch, args.max_span)
    for mb in micro:
        now = mb[0]["event_time"] / 1000
        for c in copies:
            c.maybe_sync(now, training, batch.model, args.train_dense)
            c.waiting.extend(mb)
        _, grads = online.step(mb)
        if args.step_scale == "batch":  # each example moves the rows as much as in the daily retrain
            grads = {t: (ids, g if t in args.unscaled_tables else g * (len(mb) / args.batch_size))
                     for t, (ids, g) in grads.items()}
        push_gradients(online.source, grads)
        deltas = {name: table.export_delta() for name, table in training.items()}
        for c in copies:
            c.note(deltas)
    arms = {c.name: {"auc": c.auc(day), "syncs": c.syncs, "rows_shipped": c.rows_shipped} for c in copies}
    return {"train_examples": len(history), "examples": len(day), "micro_batches": len(micro),
            "batch_train_s": round(trained_s, 1), "replay_s": round(time.perf_counter() - started - trained_s, 1),
            "arms": arms}


def summarize(per_day: list[dict]) -> list[dict]:
    """Mean AUC per arm over the evaluation days, and its difference to the batch model."""
    rows = []
    for arm in per_day[0]["arms"]:
        auc = {t: float(np.nanmean([d["arms"][arm]["auc"][t] for d in per_day])) for t in TASKS}
        base = {t: float(np.nanmean([d["arms"]["batch"]["auc"][t] for d in per_day])) for t in TASKS}
        rows.append({"arm": arm, "auc": auc, "delta": {t: auc[t] - base[t] for t in TASKS},
                     **{k: int(np.mean([d["arms"][arm][k] for d in per_day])) for k in ("syncs", "rows_shipped")}})
    return rows


def markdown(table: list[dict], results: dict) -> str:
    a = results["args"]
    head = (f"Online (sync interval S) vs batch, MMoE on {results['data']}: mean of evaluation days "
            f"{[d['day'] for d in results['days']]} of {results['n_days']} (time "
            f"{'squeezed into ' + format(a['days'], 'g') + ' days' if a['days'] else 'as recorded'}); dense "
            f"{'trained' if a['train_dense'] else 'frozen'} online; step scale {a['step_scale']}.\n\n"
            "| arm | AUC click | AUC like | Δ click vs batch | Δ like vs batch | syncs/day | rows shipped/day |\n"
            "|---|---|---|---|---|---|---|\n")
    return head + "".join(f"| {r['arm']} | {r['auc']['click']:.4f} | {r['auc']['like']:.4f} | {r['delta']['click']:+.4f}"
                          f" | {r['delta']['like']:+.4f} | {r['syncs']} | {r['rows_shipped']} |\n" for r in table)


def plot(table: list[dict], intervals: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    online = [r for r in table if r["arm"] != "batch"]
    x = [max(intervals[r["arm"]], 1.0) for r in online]  # 0 (every micro-batch) drawn at 1 s
    for ax, task in zip(axes, ("click", "like")):
        ax.plot(x, [r["auc"][task] for r in online], "o-", label="online")
        ax.axhline(next(r["auc"][task] for r in table if r["arm"] == "batch"), color="gray", ls="--", label="batch")
        ax.set_xscale("log")
        ax.set_xticks(x, [r["arm"] for r in online])
        ax.minorticks_off()
        ax.set(xlabel="sync interval (event time)", ylabel=f"AUC {task}", title=f"{task}: progressive AUC on day D")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a history folder (docs/data.md; default: the default data, as make demo)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for online_vs_batch.{json,md,png}")
    p.add_argument("--intervals", default="5s,1m,30m,5h", help="sync intervals, event time (0: every micro-batch)")
    p.add_argument("--days", type=float, default=14, help="squeeze the ratings into this many days (0: real spacing)")
    p.add_argument("--eval-days", type=int, default=3, help="evaluate the last N days, each after its own batch model")
    p.add_argument("--negatives", type=int, default=4, help="unrated items per rating (impressions without action)")
    p.add_argument("--epochs", type=int, default=1, help="batch passes over the days before D (batch.epochs)")
    p.add_argument("--batch-size", type=int, default=512, help="batch training examples per step (batch.batch_size)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam, dense weights")
    p.add_argument("--micro-batch", type=int, default=256, help="online: max examples per step (online.batch_size)")
    p.add_argument("--max-span", type=float, default=1.0, help="online: max event seconds one micro-batch spans")
    p.add_argument("--step-scale", choices=("batch", "mean"), default="batch",
                   help="batch: micro-batch row gradients x size/--batch-size (the retrain's per-example step); "
                        "mean: as the online trainer does (mean loss over whatever one poll returned)")
    p.add_argument("--unscaled-tables", type=lambda v: sorted(filter(None, v.split(","))), default=[],
                   help="with --step-scale batch: tables left at each micro-batch's mean (e.g. user_id)")
    p.add_argument("--train-dense", action="store_true", help="train dense weights online too (shipped at each sync)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # retracing notices: micro-batches vary in size by design
    started = time.perf_counter()
    intervals = {text.strip(): parse_interval(text) for text in args.intervals.split(",") if text.strip()}
    cfg = load_config()
    folder = resolve(args.data or cfg.data.path, cfg.data)
    days = days_of(load(folder, cfg.data.format, cfg.data.actions), args.days, args.negatives, args.seed)
    evaluated = [d for d in range(len(days)) if days[d]][-args.eval_days:]
    if not evaluated or evaluated[0] == 0:
        raise SystemExit(f"{args.data}: {len(days)} day(s) of data cannot give {args.eval_days} evaluation day(s) "
                         "after a training day: lower --eval-days or raise --days")
    per_day = []
    for d in evaluated:
        history = [e for day in days[:d] for e in day]
        print(f"day {d}: batch model on {len(history)} examples, online replay of {len(days[d])}", flush=True)
        per_day.append({"day": d, **replay_day(cfg, history, days[d], intervals, args)})
        print("  " + ", ".join(f"{a} {r['auc']['click']:.4f}/{r['auc']['like']:.4f}"
                               for a, r in per_day[-1]["arms"].items()) + " (AUC click/like)", flush=True)
    table = summarize(per_day)
    results = {"data": str(args.data), "n_days": len(days), "intervals_s": intervals, "summary": table,
               "days": per_day, "runtime_s": round(time.perf_counter() - started, 1),
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    text = markdown(table, results)
    print("\n" + text + f"\nruntime {results['runtime_s']:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "online_vs_batch.json").write_text(json.dumps(results, indent=2))
    (args.out / "online_vs_batch.md").write_text(text)
    plot(table, intervals, args.out / "online_vs_batch.png")
    print(f"wrote {args.out}/online_vs_batch.json, .md and .png")


if __name__ == "__main__":
    main()
