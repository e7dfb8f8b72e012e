"""Linear evaluation protocol: multinomial logistic regression on frozen features.

Follows the linear-probe protocol of Kolesnikov, Zhai & Beyer, "Revisiting Self-Supervised Visual
Representation Learning" (CVPR 2019) and Chen et al., "A Simple Framework for Contrastive Learning
of Visual Representations" (SimCLR, ICML 2020, Appendix B.6): features are standardised with the
training statistics, one L2-regularised logistic-regression model is fit per regularisation
strength, the strength is chosen on a held-out validation split, and the test split is scored
once, for the chosen model only.

Full-batch L-BFGS (what those papers use) is not in TensorFlow core, so every model is trained with
mini-batch Adam under a cosine learning-rate decay. All models of the l2 grid are stacked into one
[D, L, C] weight tensor and trained in a single compiled loop: they see identical mini-batches,
but their losses are separate sums, so each model's gradients and Adam moments are its own.
"""

import numpy as np
import tensorflow as tf

from tfssl.evaluation.knn import _as_2d_float32, _as_labels

_ADAM_BETA1 = 0.9
_ADAM_BETA2 = 0.999
_ADAM_EPSILON = 1e-8
# Features whose train std is below this are constant; dividing by it would only amplify noise.
_MIN_STD = 1e-6


def _check_split(split, name, num_classes, feature_dim=None):
    """Validates a (features, labels) pair; returns (float32 [N, D], int64 [N])."""
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise ValueError(f"{name} must be a (features, labels) pair, got {type(split).__name__}.")
    features = _as_2d_float32(split[0], f"{name} features")
    labels = _as_labels(split[1], features.shape[0], num_classes, f"{name} labels")
    if features.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one example.")
    if feature_dim is not None and features.shape[1] != feature_dim:
        raise ValueError(
            f"{name} features have dimension {features.shape[1]} but train features have "
            f"{feature_dim}; all splits must come from the same encoder."
        )
    return features, labels


def _check_probe_args(num_classes, l2_grid, epochs, batch_size, learning_rate):
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}.")
    if len(l2_grid) == 0 or any(not np.isfinite(l2) or l2 < 0 for l2 in l2_grid):
        raise ValueError(
            f"l2_grid must be a non-empty sequence of finite values >= 0, got {l2_grid}.")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0 (e.g. 1e-3 for Adam), got {learning_rate}.")


def fit_standardizer(train_features):
    """Mean and std of the training features, used to standardise every split.

    Args:
        train_features: float32 [N, D].

    Returns:
        (mean float32 [D], std float32 [D]); constant dimensions get std 1 so they are only centred.
    """
    mean = train_features.mean(axis=0, dtype=np.float64)
    std = train_features.std(axis=0, dtype=np.float64)
    std = np.where(std < _MIN_STD, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def _adam_update(param, grad, m, v, scale):
    """One bias-corrected Adam step (Kingma & Ba, 2015); `scale` folds lr and bias correction."""
    m = _ADAM_BETA1 * m + (1.0 - _ADAM_BETA1) * grad
    v = _ADAM_BETA2 * v + (1.0 - _ADAM_BETA2) * tf.square(grad)
    return param - scale * m / (tf.sqrt(v) + _ADAM_EPSILON), m, v


def _stacked_loss(weights, bias, x, y, l2):
    """Sum over models of mean cross-entropy + l2 * ||W||^2; summing keeps gradients separate.

    Args:
        weights: float32 [D, L, C]; bias: float32 [L, C]; x: float32 [B, D]; y: int64 [B];
        l2: float32 [L]. Biases are not regularised.
    """
    logits = _stacked_logits(x, weights, bias)  # [B, L, C]
    targets = tf.broadcast_to(y[:, None], tf.shape(logits)[:2])
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)  # [B, L]
    penalty = l2 * tf.reduce_sum(tf.square(weights), axis=[0, 2])
    return tf.reduce_sum(tf.reduce_mean(ce, axis=0) + penalty)


def _stacked_logits(x, weights, bias):
    """Logits [B, L, C] of all models: one [B, D] x [D, L*C] matmul, far faster on CPU than a
    batched matmul over L."""
    dim, num_models, num_classes = tf.unstack(tf.shape(weights))
    flat = tf.matmul(x, tf.reshape(weights, [dim, num_models * num_classes]))
    return tf.reshape(flat, [-1, num_models, num_classes]) + bias


@tf.function(reduce_retracing=True)
def _train_stacked(features, labels, l2, weights, bias, epochs, batch_size, learning_rate, seed):
    """Trains L logistic-regression models at once with Adam and a cosine learning rate.

    The whole loop is one graph (no per-step Python), which is what makes 100 epochs over
    54000 x 512 features take seconds on a CPU.

    Args:
        features: float32 [N, D] standardised training features.
        labels: int64 [N].
        l2: float32 [L] regularisation strength of each model.
        weights: float32 [D, L, C] initial weights; bias: float32 [L, C] initial biases.
        epochs, batch_size: int32 scalars.
        learning_rate: float32 scalar peak learning rate, cosine-decayed to 0 over all steps.
        seed: int64 [2] stateless seed for the per-epoch shuffles.

    Returns:
        Trained (weights [D, L, C], bias [L, C]).
    """
    num = tf.shape(features)[0]
    steps_per_epoch = (num + batch_size - 1) // batch_size
    total_steps = tf.cast(epochs * steps_per_epoch, tf.float32)
    m_w, v_w = tf.zeros_like(weights), tf.zeros_like(weights)
    m_b, v_b = tf.zeros_like(bias), tf.zeros_like(bias)
    for epoch in tf.range(epochs):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num), seed=tf.random.experimental.stateless_fold_in(seed, epoch))
        for s in tf.range(steps_per_epoch):
            idx = order[s * batch_size:tf.minimum((s + 1) * batch_size, num)]
            with tf.GradientTape() as tape:
                tape.watch([weights, bias])
                loss = _stacked_loss(weights, bias, tf.gather(features, idx),
                                     tf.gather(labels, idx), l2)
            grad_w, grad_b = tape.gradient(loss, [weights, bias])
            done = tf.cast(epoch * steps_per_epoch + s, tf.float32)  # steps before this one
            lr = learning_rate * 0.5 * (1.0 + tf.cos(np.pi * done / total_steps))
            t = done + 1.0  # Adam's step count
            scale = lr * tf.sqrt(1.0 - _ADAM_BETA2 ** t) / (1.0 - _ADAM_BETA1 ** t)
            weights, m_w, v_w = _adam_update(weights, grad_w, m_w, v_w, scale)
            bias, m_b, v_b = _adam_update(bias, grad_b, m_b, v_b, scale)
    return weights, bias


def _accuracies(features, labels, weights, bias):
    """Top-1 accuracy [L] of each stacked model (weights [D, L, C], bias [L, C])."""
    predicted = tf.argmax(_stacked_logits(features, weights, bias), axis=-1)  # [N, L]
    return tf.reduce_mean(tf.cast(predicted == labels[:, None], tf.float32), axis=0).numpy()


def linear_probe(train, val, test, num_classes, l2_grid=(0.0, 1e-5, 1e-4, 1e-3), epochs=100,
                 batch_size=1024, learning_rate=1e-3, seed=0):
    """Fits one logistic-regression model per l2 value and reports the val-selected one.

    Args:
        train: (features float [N, D], labels int [N]) used for fitting and standardisation.
        val: (features [N_val, D], labels [N_val]) used to select the l2 value.
        test: (features [N_test, D], labels [N_test]) scored only for the selected model, or None.
        num_classes: number of classes C (>= 2).
        l2_grid: regularisation strengths; model l minimises mean cross-entropy + l2 * ||W||^2.
        epochs: passes over the training set.
        batch_size: mini-batch size.
        learning_rate: peak Adam learning rate, cosine-decayed to 0.
        seed: seed for weight initialisation and shuffling (results are deterministic given it).

    Returns:
        dict with "val_accuracy" (float, selected model), "test_accuracy" (float, or None when
        test is None), "best_l2" (float; the first grid value on val ties) and
        "val_accuracy_by_l2" ({l2: val accuracy} for every grid value).
    """
    l2_grid = tuple(float(l2) for l2 in l2_grid)
    _check_probe_args(num_classes, l2_grid, epochs, batch_size, learning_rate)
    x_train, y_train = _check_split(train, "train", num_classes)
    x_val, y_val = _check_split(val, "val", num_classes, x_train.shape[1])
    mean, std = fit_standardizer(x_train)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    weights, bias = _fit(x_train, y_train, l2_grid, num_classes, epochs, batch_size,
                         learning_rate, seed)
    val_accs = _accuracies(tf.constant(x_val), tf.constant(y_val), weights, bias)
    best = int(np.argmax(val_accs))  # np.argmax returns the first maximum: grid order breaks ties
    result = {
        "val_accuracy": float(val_accs[best]),
        "test_accuracy": None,
        "best_l2": l2_grid[best],
        "val_accuracy_by_l2": {l2: float(acc) for l2, acc in zip(l2_grid, val_accs)},
    }
    if test is not None:
        # The test split is read only here, after selection, and only for the chosen model.
        x_test, y_test = _check_split(test, "test", num_classes, x_train.shape[1])
        result["test_accuracy"] = float(_accuracies(
            tf.constant((x_test - mean) / std), tf.constant(y_test),
            weights[:, best:best + 1], bias[best:best + 1])[0])
    return result


def _fit(x_train, y_train, l2_grid, num_classes, epochs, batch_size, learning_rate, seed):
    """Returns trained stacked (weights [D, L, C], bias [L, C]) tensors."""
    num_models, dim = len(l2_grid), x_train.shape[1]
    # Small seeded random init rather than zeros: the problem is convex, so the optimum does not
    # depend on it, but a finite budget of Adam steps does, and the seed makes that reproducible.
    # Every model starts from the same init, so a model's result does not depend on the grid.
    init = tf.random.stateless_normal([dim, num_classes], seed=[seed, 1], stddev=0.01)
    init = tf.tile(init[:, None, :], [1, num_models, 1])
    return _train_stacked(
        tf.constant(x_train), tf.constant(y_train), tf.constant(l2_grid, tf.float32), init,
        tf.zeros([num_models, num_classes]), tf.constant(int(epochs)),
        tf.constant(int(min(batch_size, x_train.shape[0]))), tf.constant(float(learning_rate)),
        tf.constant([seed, 0], tf.int64))
