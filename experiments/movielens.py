"""Model experiments on a history (time-ordered split): a table, JSON and a plot.

    .venv/ml/bin/python experiments/movielens.py [--data <folder>]   # default: the default data

Any history the data contract reads works (docs/data.md); the file keeps its name for the
results it has recorded on MovieLens.

1. Retrieval: Deep Retrieval and the brute-force two-tower (tensorflow-recommenders) beside
   the baselines (most popular in a trailing window and over all of training, EASE):
   Recall/Precision/NDCG@K with the items each user saw in training excluded (and without:
   ``_raw``), for cold and warm users, and the share of the catalogue each query scores.
2. Ranking: MMoE AUC per task (click, like, finish) with collisionless embedding tables vs
   the hashing trick (IDs modulo a space 1/4 of the distinct IDs, Monolith's comparison),
   beside the item-popularity score.

Every learned model trains once per seed (``--seeds``); tables give mean ± std.

Every embedding lives in the project's own tables (``LocalTables``), pulled and pushed
through the same plumbing the parameter servers use. Results go to experiments/results/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402,F401
from datasets import load, resolve  # noqa: E402
from datasets.history import engaged, examples, time_split  # noqa: E402
from flywheel.config import load_config  # noqa: E402
import tf_keras as keras  # noqa: E402

from models.baselines import EASE, MostPopular  # noqa: E402
from models.evaluation import auc_per_task, flat, top_k_metrics  # noqa: E402
from models.mmoe import MMoE  # noqa: E402
from models.ranking import RankingTrainer  # noqa: E402
from models.retrieval import DeepRetrievalTrainer, TwoTowerTrainer  # noqa: E402
from models.sparse import LocalTables, Slot  # noqa: E402
from paramserver.config import Adagrad, TableConfig  # noqa: E402
from paramserver.table import EmbeddingTable  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
USER_SLOTS = [Slot("user", "user_id"), Slot("history", "item_id"), Slot("user_attr", "attr")]
RANK_SLOTS = USER_SLOTS + [Slot("item", "item_id"), Slot("genre", "attr")]
TASKS = ("click", "like", "finish")


def tables(dim: int) -> LocalTables:
    return LocalTables({name: EmbeddingTable(TableConfig(name=name, dim=dim, optimizer=Adagrad(learning_rate=0.05)))
                        for name in ("user_id", "item_id", "attr")})


class HashedSource:
    """The hashing trick in front of a source: ID -> ID mod ``spaces[table]`` (collisions share
    a row); gradients of colliding IDs in one batch are summed before the push."""

    def __init__(self, source, spaces: dict[str, int]):
        self.source, self.spaces = source, spaces

    def _h(self, table, ids):
        ids = np.asarray(ids, np.uint64)
        return ids % np.uint64(self.spaces[table]) if table in self.spaces else ids

    def pull(self, table, ids, insert=False):
        return self.source.pull(table, self._h(table, ids), insert)

    def push(self, table, ids, grads):
        unique, inverse = np.unique(self._h(table, ids), return_inverse=True)
        summed = np.zeros((len(unique), grads.shape[1]), np.float32)
        np.add.at(summed, inverse, grads)
        return self.source.push(table, unique, summed)


def batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def ranking(train_ex, test_ex, hashed: bool, args, seed: int) -> dict:
    local = tables(args.dim)
    source = local
    if hashed:
        distinct = {t: len({i for e in train_ex for s in RANK_SLOTS if s.table == t for i in e["sparse"].get(s.name, [])})
                    for t in ("user_id", "item_id")}
        source = HashedSource(local, {t: max(1, n // 4) for t, n in distinct.items()})
    keras.utils.set_random_seed(seed)
    trainer = RankingTrainer(MMoE(tasks=TASKS), RANK_SLOTS, [], source, keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(seed)
    for _ in range(args.epochs):
        order = rng.permutation(len(train_ex))
        for batch in batches([train_ex[i] for i in order], 512):
            trainer.train_batch(batch)
    scores = {t: [] for t in TASKS}
    for batch in batches(test_ex, 2048):
        for t, s in trainer.score(batch).items():
            scores[t].append(s)
    labels = {t: np.array([e["labels"][t] for e in test_ex]) for t in TASKS}
    auc = auc_per_task(labels, {t: np.concatenate(v) for t, v in scores.items()})
    return {"auc": auc, "rows": {t: len(tab) for t, tab in local.tables.items()}}


def user_queries(data, train, test) -> tuple[list[dict], dict[int, set[int]], dict[int, set[int]]]:
    """One query per test user (features as of the end of training), their test items, and
    the items each user engaged with in training."""
    truth: dict[int, set[int]] = {}
    for u, i in zip(test["user"], test["item"]):
        truth.setdefault(int(u), set()).add(int(i))
    history: dict[int, list[int]] = {}
    for u, i in zip(train["user"], train["item"]):
        history.setdefault(int(u), []).append(int(i))
    queries = [{"user_id": u, "sparse": {"user": [u], "history": history.get(u, [])[-10:],
                                         "user_attr": data.user_attrs.get(u, [])}} for u in truth]
    return queries, truth, {u: set(h) for u, h in history.items()}


def baselines(train, args) -> dict:
    """The baselines' retrieve functions (deterministic: the same in every seed)."""
    window = MostPopular(window_s=args.popular_days * 86400).fit(train["item"], train["time"])
    ease = EASE(l2=args.ease_l2).fit(train["user"], train["item"])
    n = len(ease.items)
    return {f"popular ({args.popular_days:g} days)": lambda user, k: (window.recommend(k), n),
            "popular (all training)": lambda user, k, p=MostPopular().fit(train["item"]): (p.recommend(k), n),
            f"EASE (l2={args.ease_l2:g})": lambda user, k: (ease.recommend(user, k), n)}


def learned(data, train, pairs, queries, k: int, seed: int, args) -> dict:
    """Deep Retrieval and the two-tower trained with ``seed``: their retrieve functions and
    training seconds. Both draw their training pairs favouring recent ones (``--recency-days``:
    the daily retrain's trailing days, softened); Deep Retrieval's reranker gets the popularity
    prior of the last ``--popular-days`` of training (as the daily retrain sets it)."""
    rng = np.random.default_rng(seed)
    age_s = max(e["event_time"] for e in pairs) / 1000 - np.array([e["event_time"] / 1000 for e in pairs])
    weight = np.exp(-age_s / (args.recency_days * 86400)) if args.recency_days else np.ones(len(pairs))
    out = {}
    keras.utils.set_random_seed(seed)
    trainers = {
        "deep_retrieval": DeepRetrievalTrainer(tables(args.dim), USER_SLOTS, data.items, depth=args.depth,
                                               width=args.width, beam=args.beam, paths_per_item=args.paths,
                                               alpha=args.alpha, seed=seed, prior_weight=args.prior_weight,
                                               learning_rate=args.dr_lr),
        "two_tower": TwoTowerTrainer(tables(args.dim), USER_SLOTS, data.items),
    }
    for name, trainer in trainers.items():
        keras.utils.set_random_seed(seed)
        started = time.perf_counter()
        for epoch in range(args.epochs):
            # each epoch draws as many pairs as there are, the recent ones more often (with replacement)
            drawn = rng.choice(len(pairs), size=len(pairs), p=weight / weight.sum()) if args.recency_days \
                else rng.permutation(len(pairs))
            for batch in batches([pairs[i] for i in drawn], 256):
                trainer.train_batch(batch)
            if isinstance(trainer, DeepRetrievalTrainer):
                changed = trainer.end_epoch()
                print(f"  seed {seed} DR epoch {epoch + 1}: {changed} items moved; "
                      f"largest path {trainer.paths.sizes().max()} items", flush=True)
        train_s = time.perf_counter() - started
        if isinstance(trainer, DeepRetrievalTrainer):
            trainer.set_popularity(MostPopular(window_s=args.popular_days * 86400).fit(
                train["item"], train["time"]).score(trainer.items))
        found = dict(zip((q["user_id"] for q in queries), trainer.retrieve(queries, k)))
        out[name] = (lambda user, n, found=found: (found[user][0][:n], found[user][1]), train_s)
    return out


def retrieval(data, train, test, args) -> dict:
    """Every retriever and baseline over ``args.seeds``: {name: {"runs": [per seed], "mean",
    "std"}} of :func:`top_k_metrics`' figures (flattened)."""
    train, test = train[engaged(train)], test[engaged(test)]  # retrieval learns and is judged on engagements
    queries, truth, seen = user_queries(data, train, test)
    most_seen = max((len(seen.get(u, ())) for u in truth), default=0)
    runs: dict[str, list[dict]] = {}
    fixed = {name: top_k_metrics(fn, truth, seen, args.k, len(data.items)) for name, fn in baselines(train, args).items()}
    for seed in args.seeds:
        pairs = examples(data, train, negatives=0, seed=seed)
        for name, figures in fixed.items():
            runs.setdefault(name, []).append(flat(figures))
        for name, (fn, train_s) in learned(data, train, pairs, queries, args.k + most_seen, seed, args).items():
            runs.setdefault(name, []).append({**flat(top_k_metrics(fn, truth, seen, args.k, len(data.items))),
                                              "train_s": train_s})
    return {name: {"runs": got, "mean": {m: float(np.mean([r[m] for r in got])) for m in got[0]},
                   "std": {m: float(np.std([r[m] for r in got])) for m in got[0]}} for name, got in runs.items()}


RETRIEVAL_COLUMNS = ("recall_at_{k}", "recall_at_{k}_raw", "precision_at_{k}", "ndcg_at_{k}",
                     "recall_at_{k}_cold", "recall_at_{k}_warm", "share_scored")


def retrieval_table(results: dict, k: int) -> str:
    """Mean ± std over seeds of each retriever's figures, as a Markdown table."""
    columns = [c.format(k=k) for c in RETRIEVAL_COLUMNS]
    lines = ["| retriever | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, r in results.items():
        cells = [f"{r['mean'][c]:.4f} ± {r['std'][c]:.4f}" if c != "share_scored" else f"{r['mean'][c]:.1%}"
                 for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def popularity_auc(train, test_ex) -> dict[str, float]:
    """The ranking baseline: each test example scored by its item's engagements in training."""
    pop = MostPopular().fit(train[engaged(train)]["item"])
    scores = pop.score([e["item_id"] for e in test_ex])
    return auc_per_task({t: np.array([e["labels"][t] for e in test_ex]) for t in TASKS}, dict.fromkeys(TASKS, scores))


def rankings(data, train, test, args) -> dict:
    """MMoE with collisionless tables and with the hashing trick per seed, beside the
    popularity score: {name: {"runs", "mean", "std"}} of AUC per task (and table rows)."""
    runs: dict[str, list[dict]] = {}
    for seed in args.seeds:
        train_ex = examples(data, train, negatives=args.negatives, seed=seed)
        test_ex = examples(data, test, negatives=args.negatives, seed=seed + 1, prior=train)
        runs.setdefault("item popularity", []).append({"auc": popularity_auc(train, test_ex), "rows": {}})
        runs.setdefault("MMoE collisionless", []).append(ranking(train_ex, test_ex, False, args, seed))
        runs.setdefault("MMoE hashing trick (1/4 space)", []).append(ranking(train_ex, test_ex, True, args, seed))
    return {name: {"runs": got, "rows": got[-1]["rows"],
                   "mean": {t: float(np.mean([r["auc"][t] for r in got])) for t in TASKS},
                   "std": {t: float(np.std([r["auc"][t] for r in got])) for t in TASKS}} for name, got in runs.items()}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = results["k"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    r = results["retrieval"]
    if not r or not results["ranking"]:  # --parts left one out: its side stays empty
        fig.savefig(path, dpi=110)
        return
    names = list(r)
    for offset, (column, label) in zip((-0.2, 0.2), ((f"recall_at_{k}", "seen excluded"), (f"recall_at_{k}_raw", "raw"))):
        a.bar(np.arange(len(names)) + offset, [r[n]["mean"][column] for n in names], width=0.4,
              yerr=[r[n]["std"][column] for n in names], label=label)
    a.set_xticks(np.arange(len(names)), [f"{n}\n{r[n]['mean']['share_scored']:.0%} scored" for n in names],
                 fontsize=7, rotation=20)
    a.set_title(f"Recall@{k}, mean ± std over seeds {results['args']['seeds']}", fontsize=9)
    a.legend(fontsize=8)
    x = np.arange(len(TASKS))
    ranked = results["ranking"]
    width = 0.8 / len(ranked)
    for n, (name, res) in enumerate(ranked.items()):
        b.bar(x - 0.4 + width * (n + 0.5), [res["mean"][t] for t in TASKS], width=width,
              yerr=[res["std"][t] for t in TASKS], label=name)
    b.set_xticks(x, TASKS)
    b.set_ylim(0.5, 1.0)
    b.set_title("AUC per task", fontsize=9)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a history folder (docs/data.md; default: the default data, as make demo)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--dim", type=int, default=16, help="embedding size in the tables")
    parser.add_argument("--negatives", type=int, default=4, help="unrated items per rating (ranking)")
    parser.add_argument("--depth", type=int, default=2, help="DR layers D")
    parser.add_argument("--width", type=int, default=16, help="DR nodes per layer K")
    # K=16, D=2 (256 paths) suits ml-100k's 1,682 items; the paper's K=50, D=3, B=25, alpha=3e-5 are
    # for MovieLens-20M. On ml-100k, B=14 and alpha=1e-3 score about a quarter of the items.
    parser.add_argument("--beam", type=int, default=14, help="DR beam B")
    parser.add_argument("--paths", type=int, default=3, help="DR paths per item J")
    parser.add_argument("--prior-weight", type=float, default=1.0, help="DR's popularity prior weight (beam and reranker)")
    parser.add_argument("--dr-lr", type=float, default=5e-3, help="DR's Adam learning rate")
    parser.add_argument("--alpha", type=float, default=1e-3, help="DR path-size penalty weight")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2],
                        help="comma-separated: every learned model trains once per seed (mean ± std)")
    parser.add_argument("--parts", default="retrieval,ranking", help="which experiments to run")
    parser.add_argument("--popular-days", type=float, default=30, help="the popularity baseline's trailing window")
    parser.add_argument("--recency-days", type=float, default=30,
                        help="learned retrievers draw training pairs with weight exp(-age / this) (0: uniform)")
    parser.add_argument("--ease-l2", type=float, default=200.0, help="EASE's ridge weight")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for movielens.json/.png")
    args = parser.parse_args()

    cfg = load_config()
    args.data = resolve(args.data or cfg.data.path, cfg.data)
    data = load(args.data, cfg.data.format, cfg.data.actions)
    train, test = time_split(data.events, 0.2)
    print(f"{len(train)} training and {len(test)} test events; {len(data.items)} items", flush=True)
    results = {"data": str(args.data), "k": args.k, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "retrieval": retrieval(data, train, test, args) if "retrieval" in args.parts else {},
               "ranking": rankings(data, train, test, args) if "ranking" in args.parts else {}}
    print(f"\nretrieval, K = {args.k}, mean ± std over seeds {args.seeds} (seen-excluded unless _raw):")
    print(retrieval_table(results["retrieval"], args.k))
    print(f"\n| ranking (AUC, mean ± std) | " + " | ".join(TASKS) + " | user/item rows |\n" + "|---" * (len(TASKS) + 2) + "|")
    for name, r in results["ranking"].items():
        rows = f"{r['rows']['user_id']}/{r['rows']['item_id']}" if r["rows"] else "-"
        print(f"| {name} | " + " | ".join(f"{r['mean'][t]:.4f} ± {r['std'][t]:.4f}" for t in TASKS) + f" | {rows} |")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "movielens.json").write_text(json.dumps(results, indent=2))
    plot(results, args.results / "movielens.png")
    print(f"\nwrote {args.results}/movielens.json and movielens.png")


if __name__ == "__main__":
    main()
