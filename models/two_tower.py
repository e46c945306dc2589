"""Two-tower retrieval baseline with tensorflow-recommenders: a user tower over the user's slot
embeddings (PS-held), an item embedding tower, in-batch softmax (``tfrs.tasks.Retrieval``),
and brute-force top-K over every item (``tfrs.layers.factorized_top_k.BruteForce``), so it
scores the whole catalogue per query: the reference Deep Retrieval is compared with."""

from __future__ import annotations

import models  # noqa: F401  (TF environment first)
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras


class UserTower(keras.Model):
    """Concatenated slot embeddings -> a user vector of ``dim`` (shared by DR and two-tower)."""

    def __init__(self, slots: list[str], dim: int = 32, hidden: tuple[int, ...] = (64,), **kwargs):
        super().__init__(**kwargs)
        self.slots = list(slots)
        self.net = keras.Sequential([keras.layers.Dense(u, activation="relu") for u in hidden]
                                    + [keras.layers.Dense(dim)])

    def call(self, embedded: dict[str, tf.Tensor]) -> tf.Tensor:
        return self.net(tf.concat([embedded[s] for s in self.slots], axis=1))


class TwoTower(keras.Model):
    def __init__(self, user_tower: UserTower, n_items: int, dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.user_tower, self.n_items = user_tower, n_items
        self.items = keras.layers.Embedding(n_items, dim, name="item_tower")
        self.task = tfrs.tasks.Retrieval()

    def loss_of(self, user: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """In-batch softmax loss of (user vector, item index) positives."""
        return self.task(user, self.items(items))

    def index(self, k: int) -> tfrs.layers.factorized_top_k.BruteForce:
        """A brute-force index over every item's vector (rebuild after training)."""
        index = tfrs.layers.factorized_top_k.BruteForce(k=k)
        index.index(self.items(tf.range(self.n_items)), tf.range(self.n_items))
        return index
