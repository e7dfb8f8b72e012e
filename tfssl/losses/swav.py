"""SwAV: codes from a Sinkhorn-Knopp equipartition, and the swapped-prediction loss.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020, sec. 3.1 (eq. 2-3) and appendix A.1; the algorithm is
the `distributed_sinkhorn` of the reference `main_swav.py`.

Both functions work on this replica's rows: Sinkhorn's sums and the batch size are global (summed over
replicas), and the loss is the mean over the local rows, not divided by the replica count (the caller
does that once).
"""
import numbers

import tensorflow as tf

from tfssl.distribute import cross_replica_concat, cross_replica_sum, replica_id_and_count
from tfssl.losses.nt_xent import check_temperature


def _check_sinkhorn_args(epsilon, iterations):
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
        raise ValueError(f"sinkhorn epsilon must be a number > 0, got {epsilon!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"sinkhorn iterations must be an integer >= 1, got {iterations!r}")


def _rank_two(tensor, what):
    if tensor.shape.rank is not None and tensor.shape.rank != 2:
        raise ValueError(f"{what} must be [n, K] (rank 2), got shape {tensor.shape}")
    return tensor


def sinkhorn_knopp(scores, epsilon=0.05, iterations=3):
    """Soft cluster assignments ("codes") with equal prototype usage over the global batch.

    Q = exp(scores / epsilon), seen as `[K, B]` over the B = n * num_replicas samples of the global
    batch, is scaled to sum to 1, then alternately each prototype (row of Q) is scaled to total 1/K
    (sums over all replicas) and each sample (column of Q) to total 1/B (local); the result times B is
    returned, so every sample's code sums to 1 and, as the iterations converge, every
    prototype receives B/K of the global batch. The global max of scores / epsilon is subtracted before
    exp (a constant, so the normalised result is unchanged) so that nothing overflows. Scores are meant
    to be cosine similarities in [-1, 1]: at epsilon = 0.05 the exponents span at most 40, far from
    float32 underflow (a much smaller epsilon could underflow a whole prototype to 0 and give NaN).

    Args:
      scores: `[n, K]` prototype scores of this replica's samples, any float dtype.
      epsilon: entropy regularisation > 0 (0.05 in the paper).
      iterations: number of Sinkhorn-Knopp iterations >= 1 (3 in the paper).

    Returns:
      `[n, K]` float32 codes, stop-gradiented (the targets of `swav_loss`).

    Raises:
      ValueError: one line, for a bad epsilon, iterations or scores rank.
    """
    _check_sinkhorn_args(epsilon, iterations)
    scores = tf.convert_to_tensor(scores)
    _rank_two(scores, "sinkhorn_knopp scores")
    logits = tf.stop_gradient(tf.cast(scores, tf.float32)) / epsilon
    _, num_replicas = replica_id_and_count()
    global_max = tf.reduce_max(cross_replica_concat(tf.reshape(tf.reduce_max(logits), [1])))
    # Kept as [n, K], the transpose of the paper's [K, B]: a prototype's sum is over axis 0 here.
    q = tf.exp(logits - global_max)
    num_prototypes = tf.cast(tf.shape(q)[1], tf.float32)
    global_batch = tf.cast(tf.shape(q)[0] * num_replicas, tf.float32)
    # Every step is a rescaling of whole rows or columns, so in exact arithmetic the total-sum division,
    # the 1/K, 1/B and the final *B cancel out; they are kept to follow the reference and the paper's
    # marginals. What matters is that prototype sums, and the max above, are global.
    q /= cross_replica_sum(tf.reduce_sum(q))
    for _ in range(int(iterations)):
        q /= cross_replica_sum(tf.reduce_sum(q, axis=0, keepdims=True))
        q /= num_prototypes
        q /= tf.reduce_sum(q, axis=1, keepdims=True)
        q /= global_batch
    return tf.stop_gradient(q * global_batch)


def swav_loss(scores, codes, temperature=0.1):
    """Swapped prediction: every coded crop's code is predicted from each of the other crops.

    For coded crop i with codes q_i and every other crop v, the cross-entropy
    `-sum_k q_i[k] * log softmax(scores_v / temperature)[k]` is averaged over the rows; the sum over
    v != i is divided by (n_crops - 1) and the result averaged over the coded crops (as the reference
    code does). Codes are targets: no gradient flows into them.

    Args:
      scores: list of `[n, K]` prototype scores, one per crop, the large crops first (multi-crop: 2
        large then the small ones), any float dtype.
      codes: list of `[n, K]` codes (e.g. from `sinkhorn_knopp`) of the first `len(codes)` crops,
        normally 2.
      temperature: softmax temperature > 0 (0.1 in the paper).

    Returns:
      Scalar float32: the mean over this replica's rows (not divided by the number of replicas).

    Raises:
      ValueError: one line, for fewer than 2 crops, a bad number of codes, a bad temperature or shape.
    """
    if not isinstance(scores, (list, tuple)) or len(scores) < 2:
        raise ValueError(f"swav_loss scores must be a list of >= 2 crops' [n, K] scores, got "
                         f"{len(scores) if isinstance(scores, (list, tuple)) else type(scores).__name__}")
    if not isinstance(codes, (list, tuple)) or not 1 <= len(codes) <= len(scores):
        raise ValueError(f"swav_loss codes must be a list of 1 to {len(scores)} (the number of crops) "
                         f"codes, got {len(codes) if isinstance(codes, (list, tuple)) else type(codes).__name__}")
    check_temperature(temperature)
    scores = [_rank_two(tf.cast(s, tf.float32), f"swav_loss scores[{v}]") for v, s in enumerate(scores)]
    codes = [_rank_two(tf.stop_gradient(tf.cast(q, tf.float32)), f"swav_loss codes[{i}]")
             for i, q in enumerate(codes)]
    widths = {int(t.shape[1]) for t in scores + codes if t.shape.rank == 2 and t.shape[1] is not None}
    if len(widths) > 1:
        raise ValueError(f"swav_loss scores and codes must share one number of prototypes K, got {sorted(widths)}")
    log_probs = [tf.nn.log_softmax(s / temperature, axis=1) for s in scores]
    per_code = []
    for i, q in enumerate(codes):
        cross = [tf.reduce_mean(-tf.reduce_sum(q * log_probs[v], axis=1))
                 for v in range(len(scores)) if v != i]
        per_code.append(tf.add_n(cross) / (len(scores) - 1))
    return tf.add_n(per_code) / len(codes)
