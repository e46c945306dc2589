"""Deep Retrieval: beam search, the M-step and its path-size penalty, E-step training."""

import itertools

import numpy as np

import models  # noqa: F401
import tensorflow as tf
import tf_keras as keras

from models.deep_retrieval import DeepRetrieval, PathAssignment


def model(depth=3, width=3, n_items=20, user_dim=6, seed=0) -> DeepRetrieval:
    keras.utils.set_random_seed(seed)
    m = DeepRetrieval(n_items, depth=depth, width=width, code_dim=4, hidden=(8,), user_dim=user_dim)
    user = tf.random.normal((2, user_dim))
    m.path_log_prob(user, tf.zeros((2, depth), tf.int32))  # build
    m.rerank_logits(user)
    return m


def test_beam_search_returns_distinct_valid_paths_best_first_and_exact_when_wide_enough():
    m = model()
    user = tf.random.normal((4, 6), seed=1)
    paths, logp = m.beam_search(user, beam=9)  # 9 = K^(D-1): every prefix survives, so exact
    assert paths.shape == (4, 9, 3) and logp.shape == (4, 9)
    assert ((paths >= 0) & (paths < 3)).all()
    for row in range(4):
        assert len({tuple(p) for p in paths[row].tolist()}) == 9
        assert (np.diff(logp[row]) <= 1e-6).all()
        np.testing.assert_allclose(m.path_log_prob(tf.repeat(user[row:row + 1], 9, axis=0), paths[row]).numpy(),
                                   logp[row], rtol=1e-5, atol=1e-6)
        everything = np.array(list(itertools.product(range(3), repeat=3)), np.int32)
        all_logp = m.path_log_prob(tf.repeat(user[row:row + 1], len(everything), axis=0), everything).numpy()
        np.testing.assert_allclose(np.sort(all_logp)[::-1][:9], logp[row], rtol=1e-5, atol=1e-6)
        assert abs(np.log(np.exp(all_logp).sum())) < 1e-4  # a distribution over paths


def test_m_step_moves_an_item_to_the_path_whose_score_rose():
    a = PathAssignment(n_items=5, depth=2, width=4, paths_per_item=2, seed=0)
    before = {tuple(p) for p in a.item_paths[0].tolist()}
    target = next(p for p in itertools.product(range(4), repeat=2) if p not in before)
    a.accumulate(np.array([0]), np.array([[target, (0, 0)]]), np.log(np.array([[0.9, 0.05]])))
    changed = a.m_step(alpha=0.0)
    assert target in {tuple(p) for p in a.item_paths[0].tolist()}
    assert 0 in a.items_on[target] and changed == 1
    untouched = PathAssignment(n_items=5, depth=2, width=4, paths_per_item=2, seed=0)
    np.testing.assert_array_equal(a.item_paths[1:], untouched.item_paths[1:])  # no scores: paths kept


def test_the_path_size_penalty_spreads_items_over_paths():
    def crowd(alpha):
        a = PathAssignment(n_items=40, depth=2, width=4, paths_per_item=1, seed=1)
        for item in range(40):  # every item prefers the same path, a little less the others
            paths = np.array([[(0, 0), (1, 1), (2, 2), (3, 3)]])
            a.accumulate(np.array([item]), paths, np.log(np.array([[0.7, 0.1, 0.1, 0.1]])))
        a.m_step(alpha=alpha)
        return a.sizes().max()

    assert crowd(0.0) == 40
    assert crowd(1e-3) <= 20


def test_e_step_training_raises_the_likelihood_of_each_items_paths():
    n_users, n_items = 30, 12
    m = model(depth=2, width=4, n_items=n_items, user_dim=8)
    a = PathAssignment(n_items, depth=2, width=4, paths_per_item=2, seed=2)
    rng = np.random.default_rng(0)
    users = tf.constant(rng.standard_normal((n_users, 8)), tf.float32)
    likes = rng.integers(0, n_items, size=n_users)  # each user likes one item
    opt = keras.optimizers.Adam(0.05)
    losses = []
    for _ in range(60):
        with tf.GradientTape() as tape:
            loss = m.structure_loss(users, tf.constant(a.item_paths[likes])) + m.rerank_loss(users, likes)
        grads = tape.gradient(loss, m.trainable_variables)
        opt.apply_gradients(zip(grads, m.trainable_variables))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    paths, _ = m.beam_search(users, beam=4)
    found = [likes[u] in a.candidates(paths[u]) for u in range(n_users)]
    assert np.mean(found) > 0.8  # the liked item is on a path the beam returns
