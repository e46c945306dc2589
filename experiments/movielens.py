"""Model experiments on a MovieLens folder (time-ordered split): a table, JSON and a plot.

    .venv/ml/bin/python experiments/movielens.py --data ../shared/datasets/ml-100k

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
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from models.deep_retrieval import DeepRetrieval, PathAssignment  # noqa: E402
from models.evaluation import auc_per_task, recall_precision_at_k  # noqa: E402
from models.mmoe import MMoE  # noqa: E402
from models.movielens import examples, load, time_split  # noqa: E402
from models.ranking import RankingTrainer  # noqa: E402
from models.sparse import LocalTables, Slot, SparseBatch, train_step  # noqa: E402
from models.two_tower import TwoTower, UserTower  # noqa: E402
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
                                         "user_attr": data.users.get(u, [])}} for u in truth]
    return queries, truth


def user_vectors(tower, source, queries: list[dict]) -> tf.Tensor:
    batch = SparseBatch.from_examples(queries, USER_SLOTS)
    rows = {t: tf.constant(r) for t, r in batch.pull(source).items()}
    return tower(batch.embed(rows))


def retrieval(data, train, test, args) -> dict:
    items = data.items
    index_of = {int(i): n for n, i in enumerate(items)}
    pairs = examples(data, train, negatives=0, seed=args.seed)
    queries, truth = user_queries(data, train, test)
    truth_idx = {u: {index_of[i] for i in s if i in index_of} for u, s in truth.items()}
    rng = np.random.default_rng(args.seed)
    by_user = {q["user_id"]: n for n, q in enumerate(queries)}
    out = {}

    def fit(source, variables, opt, loss_of, after_batch=None, after_epoch=None) -> float:
        """Train on the (user, item) pairs for ``args.epochs``; returns seconds taken.
        ``loss_of(slot embeddings, item indices)``; weights are created by a first forward pass."""
        started, warmed = time.perf_counter(), False
        for epoch in range(args.epochs):
            for batch in batches([pairs[i] for i in rng.permutation(len(pairs))], 256):
                item_idx = np.array([index_of[e["item_id"]] for e in batch])
                sb = SparseBatch.from_examples(batch, USER_SLOTS)
                if not warmed:
                    loss_of(sb.embed({t: tf.constant(r) for t, r in sb.pull(source).items()}), item_idx)
                    warmed = True
                train_step(source, sb, variables(), opt, lambda e, i=item_idx: loss_of(e, i))
                if after_batch:
                    after_batch(item_idx)
            if after_epoch:
                after_epoch(epoch)
        return time.perf_counter() - started

    # Deep Retrieval
    keras.utils.set_random_seed(args.seed)
    source, tower = tables(args.dim), UserTower([s.name for s in USER_SLOTS], dim=32)
    dr = DeepRetrieval(len(items), depth=args.depth, width=args.width, user_dim=32)
    paths = PathAssignment(len(items), args.depth, args.width, args.paths, seed=args.seed)
    last_users = {}

    def dr_loss(embedded, item_idx):
        user = last_users["user"] = tower(embedded)
        return dr.structure_loss(user, tf.constant(paths.item_paths[item_idx])) + dr.rerank_loss(user, item_idx)

    def dr_scores(item_idx):  # the streaming path scores of the M-step
        paths.accumulate(item_idx, *dr.beam_search(tf.stop_gradient(last_users["user"]), args.beam))

    def dr_m_step(epoch):
        changed = paths.m_step(args.alpha)
        print(f"  DR epoch {epoch + 1}: {changed} items moved; largest path {paths.sizes().max()} items", flush=True)

    dr_train_s = fit(source, lambda: tower.trainable_variables + dr.trainable_variables, keras.optimizers.Adam(2e-3),
                     dr_loss, dr_scores, dr_m_step)
    users = user_vectors(tower, source, queries)
    beam_paths, _ = dr.beam_search(users, args.beam)

    def dr_retrieve(user, k):
        n = by_user[user]
        cand = paths.candidates(beam_paths[n])
        if not cand:
            return [], 0
        scores = dr.rerank_logits(users[n:n + 1], tf.constant([cand])).numpy()[0]
        return [cand[i] for i in np.argsort(-scores)[:k]], len(cand)

    out["deep_retrieval"] = {**recall_precision_at_k(dr_retrieve, truth_idx, args.k, len(items)),
                             "train_s": dr_train_s}

    # Two-tower, brute force
    keras.utils.set_random_seed(args.seed)
    source, tower = tables(args.dim), UserTower([s.name for s in USER_SLOTS], dim=32)
    tt = TwoTower(tower, len(items), dim=32)
    tt_train_s = fit(source, lambda: tt.trainable_variables, keras.optimizers.Adam(2e-3),
                     lambda e, i: tt.loss_of(e, tf.constant(i)))
    users = user_vectors(tower, source, queries)
    _, top = tt.index(args.k)(users)
    top = top.numpy()
    out["two_tower"] = {**recall_precision_at_k(lambda u, k: (list(top[by_user[u]][:k]), len(items)), truth_idx,
                                                args.k, len(items)), "train_s": tt_train_s}
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
    parser.add_argument("--data", required=True, help="a MovieLens folder (u.data or ratings.csv)")
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

    data = load(args.data)
    train, test = time_split(data.ratings, 0.2)
    print(f"{len(train)} training and {len(test)} test ratings; {len(data.items)} items", flush=True)
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
