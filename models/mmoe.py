"""MMoE fine ranking (Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD'18), with a shallow selection-bias tower.

Shared experts read the example's features; each task has its own softmax gate over the
experts and its own tower, giving one logit per task. A shallow tower over the position the
item was shown at (selection/position bias) adds one logit per task in training and is dropped
at serving, so the served score is the unbiased one (the "selection bias" correction of the
TikTok recommender; as in YouTube's "Recommending What Video to Watch Next", RecSys'19).

Example::

    model = MMoE(tasks=("click", "like", "finish"))
    logits = model({"features": x, "position": pos}, training=True)   # {task: [batch]}
    scores = model.predict_scores({"features": x})                    # serving: no bias tower
"""

from __future__ import annotations

import models  # noqa: F401  (TF environment first)
import numpy as np
import tensorflow as tf
import tf_keras as keras


def mlp(units: tuple[int, ...], name: str, last: int | None = None) -> keras.Sequential:
    layers = [keras.layers.Dense(u, activation="relu") for u in units]
    if last is not None:
        layers.append(keras.layers.Dense(last))
    return keras.Sequential(layers, name=name)


class MMoE(keras.Model):
    """Multi-gate mixture of experts over a dense feature vector.

    Args:
      tasks: task names; one gate, tower and logit each.
      num_experts: shared experts.
      expert_units: hidden sizes of each expert MLP (its output is the last size).
      tower_units: hidden sizes of each task tower (then one logit).
      position_buckets: positions 0..n-1 get their own bias; later ones share the last.
    """

    def __init__(self, tasks: tuple[str, ...] = ("click", "like", "finish"), num_experts: int = 4,
                 expert_units: tuple[int, ...] = (64, 32), tower_units: tuple[int, ...] = (16,),
                 position_buckets: int = 32, **kwargs):
        super().__init__(**kwargs)
        if not tasks:
            raise ValueError("MMoE needs at least one task")
        self.tasks, self.position_buckets = tuple(tasks), position_buckets
        self.experts = [mlp(expert_units, f"expert_{i}") for i in range(num_experts)]
        self.gates = {t: keras.layers.Dense(num_experts, activation="softmax", name=f"gate_{t}") for t in self.tasks}
        self.towers = {t: mlp(tower_units, f"tower_{t}", last=1) for t in self.tasks}
        # shallow: one learned bias per (position, task)
        self.bias_tower = keras.layers.Embedding(position_buckets, len(self.tasks), embeddings_initializer="zeros",
                                                 name="position_bias")

    def gate_weights(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        """task -> [batch, num_experts], each row a softmax (sums to one)."""
        return {t: self.gates[t](features) for t in self.tasks}

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False, with_bias: bool | None = None):
        """Logits per task, {task: [batch]}.

        Args:
          inputs: ``features`` [batch, n] float32; ``position`` [batch] int (needed with the bias).
          with_bias: add the position-bias tower's logits; default: only in training.
        """
        features = inputs["features"]
        experts = tf.stack([e(features, training=training) for e in self.experts], axis=1)  # [b, E, d]
        logits = {}
        for t, gate in self.gate_weights(features).items():
            mixed = tf.reduce_sum(experts * gate[:, :, None], axis=1)
            logits[t] = tf.squeeze(self.towers[t](mixed, training=training), axis=-1)
        if training if with_bias is None else with_bias:
            position = tf.minimum(tf.cast(inputs["position"], tf.int32), self.position_buckets - 1)
            bias = self.bias_tower(position)  # [b, tasks]
            logits = {t: logits[t] + bias[:, i] for i, t in enumerate(self.tasks)}
        return logits

    def predict_scores(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Serving: probabilities per task, without the position-bias tower."""
        return {t: tf.sigmoid(v) for t, v in self(inputs, training=False, with_bias=False).items()}


def weighted_loss(logits: dict[str, tf.Tensor], labels: dict[str, tf.Tensor],
                  weights: dict[str, tf.Tensor]) -> tf.Tensor:
    """Sum over tasks of the weighted mean binary cross-entropy; see :func:`task_weights`.

    Negatives kept with probability r stand for 1/r negatives: weighting them by 1/r makes the
    loss (and so the learned probabilities) those of the unsampled stream. A task whose
    weights are all 0 in the batch adds 0.
    """
    total = 0.0
    for task, logit in logits.items():
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels[task], tf.float32), logits=logit)
        total += tf.math.divide_no_nan(tf.reduce_sum(ce * weights[task]), tf.reduce_sum(weights[task]))
    return total


def task_weights(examples: list[dict], tasks: list[str]) -> dict[str, np.ndarray]:
    """Loss weight per task and example: ``1 / rate`` (``sample_rates[task]``, else
    ``sample_rate``, else 1), and 0 where the rate is 0 (the example was not kept for the task)."""
    out = {}
    for task in tasks:
        rates = np.array([(e.get("sample_rates") or {}).get(task, e.get("sample_rate", 1.0)) for e in examples],
                         np.float32)
        out[task] = np.divide(1.0, rates, out=np.zeros_like(rates), where=rates > 0)
    return out
