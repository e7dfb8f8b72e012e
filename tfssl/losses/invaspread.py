"""InvaSpread: the invariant-and-spreading instance loss with the batch as the dictionary.

Ye, Zhang, Yuen, Chang, "Unsupervised Embedding Learning via Invariant and Spreading Instance Feature",
CVPR 2019, in the form of the authors' code (mangye16/Unsupervised_Embedding_Learning,
`BatchCriterion` with negM = 1). The 2B L2-normalised embeddings of a batch (both views of B images)
are both anchors and candidates. With e_ik = exp(x_i . x_k / tau) and ihat the other view of i:

    Z_i = sum_{k != i} e_ik             (all 2B - 1 others, the positive e_{i ihat} included)
    p_i = e_{i ihat} / Z_i
    loss = -1/(2B) [ sum_i log p_i + sum_i sum_{k not in {i, ihat}} log(1 - e_ik / Z_i) ]

The second sum is the "spreading" term: the probability that x_i is recognised as another instance k
is pushed towards 0. tau = 0.1.

Reading of the paper against the code. As we read its eq. (2)-(5), the paper writes P(i | xhat_i)
with the denominator sum_{k=1..B} exp(f_k . fhat_i / tau), i.e. over the B features of the first
view, which *includes* the positive k = i (so Z includes the positive in both readings); the released code, and
this function, use all 2B - 1 other embeddings of the batch for every anchor, and every embedding of
both views is an anchor (hence 2B). In the code the candidates are detached
(`torch.mm(x, x.t().data)`, `reordered_x.data`): the gradient reaches only the anchor side. The
paper differentiates the whole loss; that is the default here (`detach_candidates=False`), and
`detach_candidates=True` reproduces the code's gradient (the loss value is the same).

Across replicas the global batch is the dictionary: candidates are gathered (differentiably) from every
replica; the returned loss is the mean over this replica's 2n anchors (the caller divides by the
replica count once). log p_i is evaluated as -softplus(logsumexp(negatives) - positive) and log(1 - q) as
log(-expm1(log q)) or log1p(-q), which keep small values exact in float32 and stay finite.
"""
import collections
import math

import tensorflow as tf

from tfssl.distribute import cross_replica_concat, replica_id_and_count
from tfssl.losses.infonce import check_embedding_pair
from tfssl.losses.nt_xent import check_temperature

_MASK_VALUE = 1e9
# The largest log-probability allowed into log(1 - exp(x)): keeps it finite when one candidate holds
# all of Z_i in float32 (x rounds to 0) without changing any representable non-degenerate value.
_MAX_LOG_PROB = -1e-30

InvaSpreadOutput = collections.namedtuple("InvaSpreadOutput", ["loss", "logits", "labels"])


def log1mexp(x):
    """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x (Maechler 2012's switch at -ln 2).

    Both branches get inputs at which they are finite, so neither the value nor the gradient is NaN.
    """
    x = tf.minimum(x, _MAX_LOG_PROB)
    near_zero = x > -math.log(2.0)
    from_expm1 = tf.math.log(-tf.math.expm1(tf.where(near_zero, x, -1.0)))
    from_log1p = tf.math.log1p(-tf.exp(tf.where(near_zero, -1.0, x)))
    return tf.where(near_zero, from_expm1, from_log1p)


def invaspread_loss(z1, z2, temperature=0.1, normalize=True, detach_candidates=False):
    """InvaSpread loss of two views' embeddings with the global batch as the dictionary.

    Args:
      z1: `[n, d]` embeddings of the first view on this replica.
      z2: `[n, d]` embeddings of the second view, row i the same image as `z1[i]`.
      temperature: tau > 0 (0.1 in the paper).
      normalize: L2-normalise the embeddings first (the paper's features are unit vectors).
      detach_candidates: stop the gradient through the candidate side (the released code); False
        differentiates the whole loss (the paper).

    Returns:
      `InvaSpreadOutput(loss, logits, labels)`: `loss` the float32 mean over this replica's 2n anchors;
      `logits` `[2n, 2N]` = x_i . x_k / tau for anchors [view 1 rows, view 2 rows] against the global
      candidates [all view 1, all view 2] (N = n * num_replicas), self-similarity not masked;
      `labels` `[2n]` the column of each anchor's positive.

    Raises:
      ValueError: on a bad temperature or mismatched shapes.
    """
    check_temperature(temperature)
    z1, z2 = check_embedding_pair(z1, z2, ("z1", "z2"))
    if normalize:
        z1 = tf.math.l2_normalize(z1, axis=1)
        z2 = tf.math.l2_normalize(z2, axis=1)
    n = tf.shape(z1)[0]
    replica_id, _ = replica_id_and_count()
    gathered = cross_replica_concat(tf.concat([z1, z2], axis=1))
    all_z1, all_z2 = tf.split(gathered, 2, axis=1)
    global_n = tf.shape(all_z1)[0]
    candidates = tf.concat([all_z1, all_z2], axis=0)  # [2N, d]
    if detach_candidates:
        candidates = tf.stop_gradient(candidates)
    anchors = tf.concat([z1, z2], axis=0)  # [2n, d]

    own = replica_id * n + tf.range(n)
    self_column = tf.concat([own, global_n + own], axis=0)
    labels = tf.concat([global_n + own, own], axis=0)
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    self_mask = tf.one_hot(self_column, 2 * global_n)
    positive_mask = tf.one_hot(labels, 2 * global_n)
    spread_mask = 1.0 - self_mask - positive_mask
    positive = tf.gather(logits, labels, axis=1, batch_dims=1)  # [2n]
    log_negatives = tf.reduce_logsumexp(logits - _MASK_VALUE * (1.0 - spread_mask), axis=1)
    # log p_i = -log(1 + sum_neg e_ik / e_i,ihat): softplus keeps small losses exact in float32.
    log_positive = -tf.nn.softplus(log_negatives - positive)
    log_z = positive + tf.nn.softplus(log_negatives - positive)
    log_prob = logits - log_z[:, None]  # log(e_ik / Z_i)
    # Masked entries get a harmless argument so that neither branch of log1mexp sees an extreme value.
    log_spread = log1mexp(tf.where(spread_mask > 0, log_prob, -1.0)) * spread_mask
    per_anchor = -(log_positive + tf.reduce_sum(log_spread, axis=1))
    return InvaSpreadOutput(tf.reduce_mean(per_anchor), logits, labels)
