"""InfoNCE with a queue of negatives (MoCo v1/v2) and the symmetrised in-batch form of MoCo v3.

He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation Learning",
CVPR 2020 (arXiv 2019), eq. (1) and Algorithm 1; Chen, Fan, Girshick, He. "Improved Baselines with
Momentum Contrastive Learning" (MoCo v2), 2020; Chen, Xie, He. "An Empirical Study of Training
Self-Supervised Vision Transformers" (MoCo v3), ICCV 2021, Algorithm 1.
"""
import collections

import tensorflow as tf

from tfssl.distribute import cross_replica_concat, replica_id_and_count
from tfssl.losses.nt_xent import check_temperature

InfoNCEOutput = collections.namedtuple("InfoNCEOutput", ["loss", "logits", "labels"])


def check_embedding_pair(a, b, names):
    """Converts two embedding batches to float32 and checks they are both `[n, d]` with equal shapes.

    Args:
      a: array-like `[n, d]`.
      b: array-like `[n, d]`, row i paired with `a[i]`.
      names: `(name_a, name_b)` used in the error message.

    Returns:
      `(a, b)` as float32 tensors.

    Raises:
      ValueError: when either is not rank 2 or their (statically known) shapes differ.
    """
    a = tf.cast(tf.convert_to_tensor(a), tf.float32)
    b = tf.cast(tf.convert_to_tensor(b), tf.float32)
    for name, tensor in zip(names, (a, b)):
        if tensor.shape.rank is not None and tensor.shape.rank != 2:
            raise ValueError(f"{name} must be a [batch, dim] matrix, got shape {tensor.shape}")
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _in_batch_logits(queries, keys, temperature):
    """Logits of local queries against the keys of the whole global batch, positive at the global index.

    Args:
      queries: `[n, d]` local queries.
      keys: `[n, d]` local keys, `keys[i]` the positive of `queries[i]`.
      temperature: tau > 0.

    Returns:
      `(logits [n, N], labels [n])` with N = n * num_replicas.
    """
    replica_id, _ = replica_id_and_count()
    all_keys = cross_replica_concat(keys)
    n = tf.shape(queries)[0]
    labels = replica_id * n + tf.range(n)
    logits = tf.matmul(queries, all_keys, transpose_b=True) / temperature
    return logits, labels


def infonce_loss(queries, keys, queue=None, temperature=0.07, normalize=True):
    """InfoNCE of MoCo v1/v2: each query must pick its key out of the queue of negatives.

    With a queue, query i's logits are `[q_i . k_i, q_i . queue_1, ..., q_i . queue_K] / tau` and
    its label is 0 (MoCo eq. (1)); only the shared queue supplies negatives, so nothing is gathered.
    With `queue=None` the negatives are the other keys of the *global* batch (gathered from all
    replicas), the positive sitting at the query's global index -- one direction of MoCo v3 without
    its 2*tau factor (see `symmetric_contrastive_loss`).

    Keys and queue are momentum-encoder outputs: they get `tf.stop_gradient` (the paper computes them
    under `no_grad`). The loss is the local mean cross-entropy (the caller divides by the replica
    count once, so summed per-replica gradients equal the gradient of the global-batch mean).

    Args:
      queries: `[n, d]` query embeddings q on this replica.
      keys: `[n, d]` key embeddings, `keys[i]` the positive of `queries[i]`.
      queue: `[K, d]` negatives (past normalised keys), the same on every replica; or None for
        in-batch negatives.
      temperature: tau > 0 (0.07 in MoCo v1, 0.2 in MoCo v2).
      normalize: L2-normalise queries, keys and queue first (cosine similarity, as in MoCo).
        Re-normalising an already normalised queue is a no-op.

    Returns:
      `InfoNCEOutput(loss, logits, labels)`: scalar float32 loss (local mean);
      `logits` `[n, 1 + K]` (queue) or `[n, N]` (in-batch); `labels` `[n]` int32 column of each positive.
    """
    check_temperature(temperature)
    queries, keys = check_embedding_pair(queries, keys, ("queries", "keys"))
    keys = tf.stop_gradient(keys)
    if normalize:
        queries = tf.math.l2_normalize(queries, axis=1)
        keys = tf.math.l2_normalize(keys, axis=1)
    if queue is None:
        logits, labels = _in_batch_logits(queries, keys, temperature)
    else:
        queue = tf.stop_gradient(tf.cast(tf.convert_to_tensor(queue), tf.float32))
        if not queue.shape.is_compatible_with([None, queries.shape[1]]):
            raise ValueError(f"queue must be [K, {queries.shape[1]}] like the keys, got shape {queue.shape}")
        if normalize:
            queue = tf.math.l2_normalize(queue, axis=1)
        positive = tf.reduce_sum(queries * keys, axis=1, keepdims=True)
        negatives = tf.matmul(queries, queue, transpose_b=True)
        logits = tf.concat([positive, negatives], axis=1) / temperature
        labels = tf.zeros(tf.shape(queries)[:1], tf.int32)
    per_query = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return InfoNCEOutput(tf.reduce_mean(per_query), logits, labels)


def symmetric_contrastive_loss(q1, q2, k1, k2, temperature=1.0, normalize=True):
    """MoCo v3 loss: ctr(q1, k2) + ctr(q2, k1) with in-batch negatives from every replica.

    ctr(q, k) is the mean cross-entropy of each local query against the keys of the whole global
    batch (gathered; the positive is the key of the same image, at its global index), multiplied by
    2 * tau exactly as in the paper's Algorithm 1 and code. The factor makes the gradient scale
    roughly independent of tau; it also means the value is 2 * tau times the plain cross-entropy
    sum. Both directions are *summed*, not averaged, as in the paper. Keys get `tf.stop_gradient`
    (momentum encoder). The returned loss is this replica's value (the caller divides it by the
    replica count once for the gradient sum):

        loss = 2 * tau * (mean_i CE(q1_i, k2) + mean_i CE(q2_i, k1))

    Args:
      q1: `[n, d]` queries (online encoder + projector + predictor) of view 1.
      q2: `[n, d]` queries of view 2.
      k1: `[n, d]` keys (momentum encoder) of view 1.
      k2: `[n, d]` keys of view 2.
      temperature: tau > 0 (1.0 for ResNet-50, 0.2 for ViT in the MoCo v3 repository).
      normalize: L2-normalise queries and keys first, as in the paper.

    Returns:
      `InfoNCEOutput(loss, logits, labels)`: scalar loss as above; `logits` `[2n, N]` (rows of
      q1-vs-k2 then q2-vs-k1, already divided by tau); `labels` `[2n]` global positive columns.
    """
    check_temperature(temperature)
    q1, k2 = check_embedding_pair(q1, k2, ("q1", "k2"))
    q2, k1 = check_embedding_pair(q2, k1, ("q2", "k1"))
    check_embedding_pair(q1, q2, ("q1", "q2"))
    first = infonce_loss(q1, k2, None, temperature, normalize)
    second = infonce_loss(q2, k1, None, temperature, normalize)
    loss = 2.0 * temperature * (first.loss + second.loss)
    logits = tf.concat([first.logits, second.logits], axis=0)
    labels = tf.concat([first.labels, second.labels], axis=0)
    return InfoNCEOutput(loss, logits, labels)
