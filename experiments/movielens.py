"""Model experiments on a history (time-ordered split): a table, JSON and a plot.

    .venv/ml/bin/python experiments/movielens.py [--data <folder>]   # default: the default data

Any history the data contract reads works (docs/data.md); the file keeps its name for the
results it has recorded on MovieLens.

1. Retrieval: Deep Retrieval vs the brute-force two-tower (tensorflow-recommenders):
   Recall@K and the share of the catalogue each query scores.
2. Ranking: MMoE AUC per task (click, like, finish) with collisionless embedding tables vs
   the hashing trick (IDs modulo a space 1/4 of the distinct IDs, Monolith's comparison).

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

from models.evaluation import auc_per_task, recall_precision_at_k  # noqa: E402
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


def ranking(train_ex, test_ex, hashed: bool, args) -> dict:
    local = tables(args.dim)
    source = local
    if hashed:
        distinct = {t: len({i for e in train_ex for s in RANK_SLOTS if s.table == t for i in e["sparse"].get(s.name, [])})
                    for t in ("user_id", "item_id")}
        source = HashedSource(local, {t: max(1, n // 4) for t, n in distinct.items()})
    keras.utils.set_random_seed(args.seed)
    trainer = RankingTrainer(MMoE(tasks=TASKS), RANK_SLOTS, [], source, keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(args.seed)
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


def user_queries(data, train, test) -> tuple[list[dict], dict[int, set[int]]]:
    """One query per test user (features as of the end of training) and their test items."""
    truth: dict[int, set[int]] = {}
    for u, i in zip(test["user"], test["item"]):
        truth.setdefault(int(u), set()).add(int(i))
    history: dict[int, list[int]] = {}
    for u, i in zip(train["user"], train["item"]):
        history.setdefault(int(u), []).append(int(i))
    queries = [{"user_id": u, "sparse": {"user": [u], "history": history.get(u, [])[-10:],
                                         "user_attr": data.user_attrs.get(u, [])}} for u in truth]
    return queries, truth


def retrieval(data, train, test, args) -> dict:
    train, test = train[engaged(train)], test[engaged(test)]  # retrieval learns and is judged on engagements
    pairs = examples(data, train, negatives=0, seed=args.seed)
    queries, truth = user_queries(data, train, test)
    rng = np.random.default_rng(args.seed)
    out = {}
    keras.utils.set_random_seed(args.seed)
    trainers = {
        "deep_retrieval": DeepRetrievalTrainer(tables(args.dim), USER_SLOTS, data.items, depth=args.depth,
                                               width=args.width, beam=args.beam, paths_per_item=args.paths,
                                               alpha=args.alpha, seed=args.seed),
        "two_tower": TwoTowerTrainer(tables(args.dim), USER_SLOTS, data.items),
    }
    for name, trainer in trainers.items():
        keras.utils.set_random_seed(args.seed)
        started = time.perf_counter()
        for epoch in range(args.epochs):
            for batch in batches([pairs[i] for i in rng.permutation(len(pairs))], 256):
                trainer.train_batch(batch)
            if isinstance(trainer, DeepRetrievalTrainer):
                changed = trainer.end_epoch()
                print(f"  DR epoch {epoch + 1}: {changed} items moved; "
                      f"largest path {trainer.paths.sizes().max()} items", flush=True)
        train_s = time.perf_counter() - started
        found = dict(zip((q["user_id"] for q in queries), trainer.retrieve(queries, args.k)))
        out[name] = {**recall_precision_at_k(lambda user, k: found[user], truth, args.k, len(data.items)),
                     "train_s": train_s}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    r = results["retrieval"]
    names = list(r)
    a.bar(names, [r[n][f"recall@{results['k']}"] for n in names], color=["tab:blue", "tab:gray"])
    a.set_title(f"Recall@{results['k']} (share scored: " +
                ", ".join(f"{n} {r[n]['share_scored']:.0%}" for n in names) + ")", fontsize=9)
    x = np.arange(len(TASKS))
    for offset, (name, res) in zip((-0.2, 0.2), results["ranking"].items()):
        b.bar(x + offset, [res["auc"][t] for t in TASKS], width=0.4, label=name)
    b.set_xticks(x, TASKS)
    b.set_ylim(0.5, 1.0)
    b.set_title("MMoE AUC per task", fontsize=9)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a history folder (docs/data.md; default: the default data, as make demo)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dim", type=int, default=16, help="embedding size in the tables")
    parser.add_argument("--negatives", type=int, default=4, help="unrated items per rating (ranking)")
    parser.add_argument("--depth", type=int, default=2, help="DR layers D")
    parser.add_argument("--width", type=int, default=16, help="DR nodes per layer K")
    # K=16, D=2 (256 paths) suits ml-100k's 1,682 items; the paper's K=50, D=3, B=25, alpha=3e-5 are
    # for MovieLens-20M. On ml-100k, B=14 and alpha=1e-3 score about a quarter of the items.
    parser.add_argument("--beam", type=int, default=14, help="DR beam B")
    parser.add_argument("--paths", type=int, default=3, help="DR paths per item J")
    parser.add_argument("--alpha", type=float, default=1e-3, help="DR path-size penalty weight")
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for movielens.json/.png")
    args = parser.parse_args()

    cfg = load_config()
    args.data = resolve(args.data or cfg.data.path, cfg.data)
    data = load(args.data, cfg.data.format, cfg.data.actions)
    train, test = time_split(data.events, 0.2)
    print(f"{len(train)} training and {len(test)} test events; {len(data.items)} items", flush=True)
    results = {"data": str(args.data), "k": args.k, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "retrieval": retrieval(data, train, test, args)}
    train_ex = examples(data, train, negatives=args.negatives, seed=args.seed)
    test_ex = examples(data, test, negatives=args.negatives, seed=args.seed + 1, prior=train)
    results["ranking"] = {"collisionless": ranking(train_ex, test_ex, False, args),
                          "hashing trick (1/4 space)": ranking(train_ex, test_ex, True, args)}

    print(f"\n{'retrieval':<28}{'recall@' + str(args.k):>12}{'precision':>12}{'share scored':>14}{'train s':>10}")
    for name, r in results["retrieval"].items():
        print(f"{name:<28}{r[f'recall@{args.k}']:>12.4f}{r[f'precision@{args.k}']:>12.4f}"
              f"{r['share_scored']:>14.1%}{r['train_s']:>10.1f}")
    print(f"\n{'ranking (MMoE AUC)':<28}" + "".join(f"{t:>10}" for t in TASKS) + f"{'user/item rows':>18}")
    for name, r in results["ranking"].items():
        print(f"{name:<28}" + "".join(f"{r['auc'][t]:>10.4f}" for t in TASKS)
              + f"{r['rows']['user_id']:>9}/{r['rows']['item_id']}")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "movielens.json").write_text(json.dumps(results, indent=2))
    plot(results, args.results / "movielens.png")
    print(f"\nwrote {args.results}/movielens.json and movielens.png")


if __name__ == "__main__":
    main()
