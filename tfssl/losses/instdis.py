"""Losses of non-parametric instance discrimination against a memory bank.

Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR
2018. Every training image is its own class; the class "weights" are the bank rows v_j, and the
logit of image j for a feature f is s_j = v_j . f / tau (sec. 3.1, eq. 2). Two objectives:

- "softmax": the non-parametric softmax over the positive and K sampled negatives (eq. 2 restricted
  to the sampled classes): cross-entropy of [s_pos, s_neg_1, ..., s_neg_K] with label 0.
- "nce": noise-contrastive estimation (sec. 3.2, eq. 3-6): P(j|f) = exp(s_j) / Z with a constant Z,
  noise distribution P_n = 1/N, h(j) = P(j|f) / (P(j|f) + K P_n), and
  loss = -log h(pos) - sum_k log(1 - h(neg_k)), averaged over the batch.

The NCE loss is evaluated in log space: with c = log(K Z / N), log h(j) = -softplus(c - s_j) and
log(1 - h(j)) = -softplus(s_j - c), which is exact and never overflows.
"""
import collections
import numbers

import tensorflow as tf

from tfssl.distribute import cross_replica_concat
from tfssl.losses.nt_xent import check_temperature

INSTDIS_LOSSES = ("nce", "softmax")

InstDisOutput = collections.namedtuple("InstDisOutput", ["loss", "logits"])


def check_instdis_loss(loss):
    """Raises ValueError unless `loss` is one of `INSTDIS_LOSSES`."""
    if loss not in INSTDIS_LOSSES:
        raise ValueError(f"unknown InstDis loss {loss!r}; choose one of {', '.join(INSTDIS_LOSSES)}")


def _check_num_data(num_data):
    if not isinstance(num_data, numbers.Integral) or isinstance(num_data, bool) or num_data < 1:
        raise ValueError(f"the NCE loss needs num_data = the number of training examples N >= 1, got {num_data!r}")


def instdis_logits(features, bank_positive, bank_negatives, temperature):
    """Logits `[s_pos, s_neg_1..s_neg_K]` of each feature against its bank row and the shared negatives.

    Args:
      features: `[n, d]` (L2-normalised) features f on this replica.
      bank_positive: `[n, d]` bank rows of the same examples, `bank_positive[i]` for `features[i]`.
      bank_negatives: `[K, d]` bank rows of the K sampled negatives, shared by every feature.
      temperature: tau > 0.

    Returns:
      float32 `[n, 1 + K]`: column 0 `<bank_positive_i, f_i> / tau`, then `<bank_negatives_k, f_i> / tau`.
      The bank rows are constants (stop-gradient); the gradient reaches only `features`.
    """
    check_temperature(temperature)
    features = tf.cast(tf.convert_to_tensor(features), tf.float32)
    positive = tf.stop_gradient(tf.cast(tf.convert_to_tensor(bank_positive), tf.float32))
    negatives = tf.stop_gradient(tf.cast(tf.convert_to_tensor(bank_negatives), tf.float32))
    for name, tensor in (("features", features), ("bank_positive", positive), ("bank_negatives", negatives)):
        if tensor.shape.rank is not None and tensor.shape.rank != 2:
            raise ValueError(f"{name} must be a [rows, dim] matrix, got shape {tensor.shape}")
    if not features.shape.is_compatible_with(positive.shape):
        raise ValueError(f"bank_positive must have the features' shape {features.shape}, got {positive.shape}")
    if not negatives.shape[1:].is_compatible_with(features.shape[1:]):
        raise ValueError(f"bank_negatives must be [K, {features.shape[1]}] like the features, got {negatives.shape}")
    pos = tf.reduce_sum(features * positive, axis=1, keepdims=True)
    neg = tf.matmul(features, negatives, transpose_b=True)
    return tf.concat([pos, neg], axis=1) / temperature


def estimate_nce_normalizer(logits, num_data):
    """Z = N * mean of exp(s) over every logit of the *global* batch (sec. 3.2: Z ~ N E_j[exp(s_j)]).

    The sum and count of exp(logits) are gathered from all replicas, so every replica gets the same Z
    and it does not depend on how the batch is split.

    Args:
      logits: `[n, 1 + K]` local logits from `instdis_logits` (positive and negatives alike).
      num_data: N, the number of training examples.

    Returns:
      float32 scalar, no gradient.
    """
    _check_num_data(num_data)
    exp = tf.exp(tf.stop_gradient(tf.cast(logits, tf.float32)))
    local = tf.stack([tf.reduce_sum(exp), tf.cast(tf.size(exp), tf.float32)])
    total = tf.reduce_sum(cross_replica_concat(local[None, :]), axis=0)
    return float(num_data) * total[0] / total[1]


def frozen_nce_normalizer(variable, logits, num_data):
    """NCE's Z, estimated once and then frozen: `variable` (a scalar, 0 = not estimated yet) takes this global
    batch's estimate on its first use and keeps it; returns the value in force (the paper's code does this)."""
    stored = tf.convert_to_tensor(variable.value)
    normalizer = tf.where(stored > 0.0, stored, estimate_nce_normalizer(logits, num_data))
    variable.assign(normalizer)
    return normalizer


def instdis_loss(features, positives, negatives, temperature=0.07, loss="nce", num_data=None, normalizer=None):
    """InstDis loss of features against their bank rows and K shared bank negatives.

    "nce" (the paper's main objective): with s the logits, c = log(K Z / N),
        loss_i = softplus(c - s_pos_i) + sum_k softplus(s_neg_ik - c)
    which equals -log h(pos_i) - sum_k log(1 - h(neg_ik)) for h = P / (P + K / N), P = exp(s) / Z.
    "softmax": cross-entropy of `[s_pos, s_neg_1..s_neg_K]` with label 0.

    The loss is the local mean over the n features (the caller divides by the replica count once, so
    summed per-replica gradients equal the gradient of the global-batch mean).

    Args:
      features: `[n, d]` L2-normalised features f (not normalised again here).
      positives: `[n, d]` bank rows of the same examples (treated as constants).
      negatives: `[K, d]` bank rows of the sampled negatives, shared by the batch (constants).
      temperature: tau > 0 (0.07 in the paper).
      loss: "nce" or "softmax".
      num_data: N, the number of training examples (the bank size); required for "nce".
      normalizer: the NCE constant Z (a scalar, e.g. the method's frozen estimate); None estimates it
        from this batch with `estimate_nce_normalizer`. Ignored by "softmax".

    Returns:
      `InstDisOutput(loss, logits)`: scalar float32 loss (local mean) and the
      `[n, 1 + K]` logits (positive in column 0).
    """
    check_instdis_loss(loss)
    logits = instdis_logits(features, positives, negatives, temperature)
    if loss == "softmax":
        labels = tf.zeros(tf.shape(logits)[:1], tf.int32)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    else:
        _check_num_data(num_data)
        if normalizer is None:
            normalizer = estimate_nce_normalizer(logits, num_data)
        normalizer = tf.stop_gradient(tf.cast(normalizer, tf.float32))
        num_negatives = tf.cast(tf.shape(logits)[1] - 1, tf.float32)
        # log of K * P_n * Z = K Z / N: the logit at which h = 1/2.
        c = tf.math.log(num_negatives) + tf.math.log(normalizer) - tf.math.log(float(num_data))
        per_example = (tf.nn.softplus(c - logits[:, 0])
                       + tf.reduce_sum(tf.nn.softplus(logits[:, 1:] - c), axis=1))
    return InstDisOutput(tf.reduce_mean(per_example), logits)
