"""NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020, eq. (1).
"""
import collections

import tensorflow as tf

from tfssl.distribute import cross_replica_concat, replica_id_and_count

# Added to self-similarity logits so an anchor is never its own negative. Finite (not -inf) so that
# 0 * mask never produces NaN; large enough that exp() underflows to exactly 0 in float32.
_MASK_VALUE = 1e9

NTXentOutput = collections.namedtuple("NTXentOutput", ["loss", "logits", "labels"])


def check_temperature(temperature):
    """Raises ValueError unless `temperature` is a positive number."""
    if not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")


def nt_xent_loss(z1, z2, temperature=0.5, normalize=True):
    """NT-Xent over the 2N views of a (possibly multi-replica) batch.

    Each of the 2n local anchors has one positive (the other view of its image) and 2N - 2 negatives:
    both views of every other image in the *global* batch, gathered from all replicas. The returned
    loss is the local mean; the caller divides it by the replica count once, so the sum of per-replica gradients
    (what `tf.distribute` does) equals the gradient of the mean loss over the global batch.

    Args:
      z1: `[n, d]` projections of the first view on this replica.
      z2: `[n, d]` projections of the second view, row i the same image as `z1[i]`.
      temperature: softmax temperature tau > 0.
      normalize: L2-normalise the projections first (cosine similarity, as in the paper).

    Returns:
      `NTXentOutput(loss, logits, labels)`: scalar float32 loss (local mean);
      `logits` `[2n, 2N]`: anchor-vs-candidate similarities / tau for the local anchors, the columns
      ordered [views 2 of all images, views 1 of all images] for view-1 anchors and [views 1, views 2]
      for view-2 anchors, self-similarity masked to -1e9; `labels` `[2n]`: column of each positive.
    """
    check_temperature(temperature)
    z1 = tf.cast(z1, tf.float32)
    z2 = tf.cast(z2, tf.float32)
    if normalize:
        z1 = tf.math.l2_normalize(z1, axis=1)
        z2 = tf.math.l2_normalize(z2, axis=1)
    n = tf.shape(z1)[0]
    replica_id, _ = replica_id_and_count()
    all_z1 = cross_replica_concat(z1)
    all_z2 = cross_replica_concat(z2)
    global_n = tf.shape(all_z1)[0]

    # Global index of each local image: the positive's column and the self column to mask.
    idx = replica_id * n + tf.range(n)
    self_mask = tf.one_hot(idx, global_n) * _MASK_VALUE

    def anchor_logits(anchor, same_view, other_view):
        positives_and_cross = tf.matmul(anchor, other_view, transpose_b=True) / temperature
        within = tf.matmul(anchor, same_view, transpose_b=True) / temperature - self_mask
        return tf.concat([positives_and_cross, within], axis=1)

    logits = tf.concat(
        [anchor_logits(z1, all_z1, all_z2), anchor_logits(z2, all_z2, all_z1)], axis=0
    )
    labels = tf.concat([idx, idx], axis=0)
    per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    loss = tf.reduce_mean(per_anchor)
    return NTXentOutput(loss, logits, labels)


def contrastive_accuracy_and_entropy(logits, labels):
    """Top-1 accuracy of picking the positive, and mean entropy of the softmax over candidates.

    Args:
      logits: `[m, c]` from `nt_xent_loss`.
      labels: `[m]` positive columns.

    Returns:
      `(accuracy, entropy)` float32 scalars over the local anchors.
    """
    hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), tf.cast(labels, tf.int32))
    probs = tf.nn.softmax(logits, axis=1)
    # xlogy gives 0 * log 0 = 0 for the masked self column instead of NaN.
    entropy = -tf.reduce_sum(tf.math.xlogy(probs, probs), axis=1)
    return tf.reduce_mean(tf.cast(hits, tf.float32)), tf.reduce_mean(entropy)
