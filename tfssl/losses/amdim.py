"""AMDIM's multiscale global-to-local NCE.

Bachman, Hjelm, Buchwalter, "Learning Representations by Maximizing Mutual Information Across Views",
NeurIPS 2019, and the authors' `costs.py` (`NCE_MI_MULTI`, `LossMultiNCE`); the combined
objective as written by Falcon & Cho, "A Framework for Contrastive Self-Supervised Learning and
Designing a New Approach" (2020): L_AMDIM = -1/3 [N(1 -> 5) + N(1 -> 7) + N(5 -> 5)].

One NCE term `amdim_nce(source, targets)` scores every source vector s_i (one per image of view 1)
against every location l of every image j of the other view's target map t:

    score(i, j, l) = <s_i, t_jl> / sqrt(d)                          (d = n_rkhs)
    penalty        = w * mean(score ** 2)                           (before clipping; w = 0.05)
    score         <- c * tanh(score / c)                            (soft clip, c = 20)
    loss_il        = -log( exp(score(i, i, l)) / (exp(score(i, i, l)) + sum_{j != i, l'} exp(score(i, j, l'))) )

i.e. the positive of (i, l) is the same image at location l and its negatives are all locations of all
other images; the other locations of the same image are neither. The term is the mean of loss_il over
i and l. Negatives come from the *global* batch (targets gathered across replicas, differentiably); the
returned values are means over this replica's sources (the caller divides by the replica count once).

Differences from the reference code: the three scale pairs are averaged (seed 000's -1/3) where
`task_self_supervised.py` sums them, and the penalty is `penalty_weight` (0.05, lightning-bolts'
value) times the mean of score^2 over the six (pair, direction) terms, where amdim-public uses
0.04 * mean(score^2) per term summed over the three pairs (averaged over directions). Both combinations
are available from the returned parts. The source location of the 5 -> 5 term is drawn per image from a
stateless seed over the global batch (`amdim_source_locations`), so a run is reproducible and one device
and N replicas draw the same locations for the same image.
"""
import collections
import numbers

import tensorflow as tf

from tfssl.distribute import cross_replica_concat, replica_id_and_count

# Subtracted from the masked scores: finite, so 0 * mask never makes NaN, and exp() of it underflows to 0.
_MASK_VALUE = 1e9
# Folded into the seed so the source-location stream differs from other streams of the same step seed.
_LOCATION_SALT = 0xA3D1

AMDIMNCEOutput = collections.namedtuple("AMDIMNCEOutput", ["loss", "penalty", "scores"])
AMDIMOutput = collections.namedtuple("AMDIMOutput", ["loss", "nce_1t5", "nce_1t7", "nce_5t5", "penalty"])


def check_clip(clip):
    """Raises ValueError unless `clip` is None (no clipping) or a number > 0."""
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not clip > 0):
        raise ValueError(f"clip must be None (no soft clipping) or a number > 0 (AMDIM: 20), got {clip!r}")


def _check_penalty_weight(weight):
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or weight < 0:
        raise ValueError(f"penalty_weight must be a number >= 0 (AMDIM: 0.05), got {weight!r}")


def soft_clip(scores, clip):
    """`clip * tanh(scores / clip)`: AMDIM's soft clipping to (-clip, clip); identity for clip=None."""
    check_clip(clip)
    if clip is None:
        return scores
    return clip * tf.tanh(scores / clip)


def _as_vectors(tensor, name):
    """`[n, d]` float32 from `[n, d]` or a 1x1 map `[n, 1, 1, d]`."""
    tensor = tf.cast(tf.convert_to_tensor(tensor), tf.float32)
    if tensor.shape.rank == 4:
        if tensor.shape[1] != 1 or tensor.shape[2] != 1:
            raise ValueError(f"{name} must be [n, d] or a 1x1 map [n, 1, 1, d], got shape {tensor.shape}")
        return tf.reshape(tensor, [-1, tensor.shape[-1]])
    if tensor.shape.rank != 2:
        raise ValueError(f"{name} must be [n, d] or a 1x1 map [n, 1, 1, d], got shape {tensor.shape}")
    return tensor


def _as_locations(tensor, name):
    """`[n, L, d]` float32 from a map `[n, H, W, d]` (L = H W, row-major) or `[n, L, d]`."""
    tensor = tf.cast(tf.convert_to_tensor(tensor), tf.float32)
    if tensor.shape.rank == 4:
        height, width = tensor.shape[1], tensor.shape[2]
        if height is None or width is None:
            raise ValueError(f"{name} needs a static spatial size, got shape {tensor.shape}")
        return tf.reshape(tensor, [-1, height * width, tensor.shape[-1]])
    if tensor.shape.rank != 3:
        raise ValueError(f"{name} must be a feature map [n, H, W, d] or [n, L, d], got shape {tensor.shape}")
    return tensor


def amdim_nce(source, targets, clip=20.0, penalty_weight=0.05):
    """One global-to-local NCE term of AMDIM (see the module docstring for the formula).

    Args:
      source: `[n, d]` (or `[n, 1, 1, d]`) source vectors of this replica's images, one per image.
      targets: `[n, H, W, d]` (or `[n, L, d]`) target maps of the same images from the other view; the
        maps of every replica are the candidates.
      clip: soft-clipping value c > 0 of the scores (20 in AMDIM), or None for none.
      penalty_weight: w >= 0 of the score penalty w * mean(score^2), taken before clipping.

    Returns:
      `AMDIMNCEOutput(loss, penalty, scores)`: float32 scalars `loss` (mean over this replica's n
      sources and the L target locations) and `penalty` (w * mean of the squared raw scores of this
      replica's rows); `scores` `[n, N, L]` are the clipped scores, N = n * num_replicas, image i's
      positives in column `replica_id * n + i`.

    Raises:
      ValueError: on bad shapes, a feature-size mismatch, or a bad clip / penalty weight.
    """
    check_clip(clip)
    _check_penalty_weight(penalty_weight)
    source = _as_vectors(source, "source")
    targets = _as_locations(targets, "targets")
    dim = source.shape[-1]
    if dim is None or targets.shape[-1] != dim:
        raise ValueError(f"source and targets need the same known feature size d, got {source.shape} and "
                         f"{targets.shape}")
    if not source.shape[:1].is_compatible_with(targets.shape[:1]):
        raise ValueError(f"source and targets must hold the same images, got {source.shape[0]} and "
                         f"{targets.shape[0]} rows")
    replica_id, _ = replica_id_and_count()
    own = replica_id * tf.shape(source)[0] + tf.range(tf.shape(source)[0])  # global index of each source image
    return _nce_on_gathered(source, cross_replica_concat(targets), own, clip, penalty_weight)


def _nce_on_gathered(source, all_targets, own, clip, penalty_weight):
    """`amdim_nce` given the gathered targets `[N, L, d]` and each source's global image index `own` `[n]`."""
    n, global_n = tf.shape(source)[0], tf.shape(all_targets)[0]
    raw = tf.einsum("id,jld->ijl", source, all_targets) / tf.sqrt(float(source.shape[-1]))
    penalty = penalty_weight * tf.reduce_mean(tf.square(raw))
    scores = soft_clip(raw, clip)
    positives = tf.gather(scores, own, axis=1, batch_dims=1)  # [n, L]
    same_image = tf.one_hot(own, global_n)[:, :, None]  # [n, N, 1]
    negatives = tf.reshape(scores - _MASK_VALUE * same_image, [n, -1])
    log_negatives = tf.reduce_logsumexp(negatives, axis=1, keepdims=True)  # [n, 1]
    # -log(e^p / (e^p + e^q)) = softplus(q - p): exact and never overflows.
    loss = tf.reduce_mean(tf.nn.softplus(log_negatives - positives))
    return AMDIMNCEOutput(loss, penalty, scores)


def amdim_source_locations(seed, batch_size, num_locations):
    """The source location of every image of the *global* batch for both views: int32 `[2, batch_size]`.

    Row 0 is used for view a's sources, row 1 for view b's; values are uniform on [0, num_locations)
    (row-major positions in the map), a stateless function of `seed`.

    Args:
      seed: int `[2]` stateless seed (e.g. (run seed, step)).
      batch_size: the global batch size N (a Python int or a scalar int tensor).
      num_locations: H * W of the map the sources are taken from (25 for r5).
    """
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank != 1 or seed.shape[0] != 2:
        raise ValueError(f"seed must be a stateless seed of shape [2], got shape {seed.shape}")
    seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), _LOCATION_SALT, alg="philox")
    return tf.random.stateless_uniform(tf.stack([2, batch_size]), seed, minval=0, maxval=num_locations,
                                       dtype=tf.int32, alg="philox")


def _sample_sources(local_map, locations):
    """`[n, d]`: for each local image the map vector at its location (`locations` `[n]`, row-major)."""
    return tf.gather(local_map, locations, axis=1, batch_dims=1)


def amdim_loss(r1_a, r5_a, r7_a, r1_b, r5_b, r7_b, seed, clip=20.0, penalty_weight=0.05):
    """AMDIM's objective over the 1 -> 5, 1 -> 7 and 5 -> 5 scale pairs, each in both directions.

    N(1 -> 5) = mean(amdim_nce(r1_a, r5_b), amdim_nce(r1_b, r5_a)), likewise N(1 -> 7) with r7, and
    N(5 -> 5) with the source taken from r5 of one view at one random location per image (both views
    drawn independently, see `amdim_source_locations`). Then

        loss = (N(1 -> 5) + N(1 -> 7) + N(5 -> 5)) / 3 + penalty,

    with penalty = the mean of the six terms' penalties (each penalty_weight * mean(raw score^2)).

    Args:
      r1_a, r5_a, r7_a: view a's endpoints on this replica, `[n, 1, 1, d]` (or `[n, d]`), `[n, 5, 5, d]`,
        `[n, 7, 7, d]` (any spatial sizes work; the 5 -> 5 source is drawn from r5's H * W locations).
      r1_b, r5_b, r7_b: view b's endpoints of the same images.
      seed: int `[2]` stateless seed of this step, the same on every replica.
      clip: soft clipping value (20 in AMDIM) or None.
      penalty_weight: weight of the score penalty (0.05).

    Returns:
      `AMDIMOutput(loss, nce_1t5, nce_1t7, nce_5t5, penalty)`: float32 scalars, means over this
      replica's images; `loss` as above, the three NCE terms (each averaged over its two directions)
      and the penalty.
    """
    check_clip(clip)
    _check_penalty_weight(penalty_weight)
    r1_a, r1_b = _as_vectors(r1_a, "r1_a"), _as_vectors(r1_b, "r1_b")
    r5_a, r5_b = _as_locations(r5_a, "r5_a"), _as_locations(r5_b, "r5_b")
    r7_a, r7_b = _as_locations(r7_a, "r7_a"), _as_locations(r7_b, "r7_b")
    for name, tensor in (("r5_a", r5_a), ("r7_a", r7_a)):
        if tensor.shape[1] is None:
            raise ValueError(f"{name} needs a static number of locations, got shape {tensor.shape}")
    for (name_a, a), (name_b, b) in ((("r1_a", r1_a), ("r1_b", r1_b)), (("r5_a", r5_a), ("r5_b", r5_b)),
                                     (("r7_a", r7_a), ("r7_b", r7_b))):
        if not a.shape.is_compatible_with(b.shape):
            raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")
    dims = {t.shape[-1] for t in (r1_a, r1_b, r5_a, r5_b, r7_a, r7_b)}
    if len(dims) != 1 or None in dims:
        raise ValueError(f"all six endpoints need the same known feature size n_rkhs, got sizes "
                         f"{sorted(dims, key=str)}")
    n = tf.shape(r1_a)[0]
    replica_id, num_replicas = replica_id_and_count()
    own = replica_id * n + tf.range(n)
    locations = amdim_source_locations(seed, n * num_replicas, r5_a.shape[1])
    local_locations = tf.gather(locations, own, axis=1)
    r5_src_a = _sample_sources(r5_a, local_locations[0])
    r5_src_b = _sample_sources(r5_b, local_locations[1])

    # One gather for the four target maps (one collective instead of six).
    sizes = [r5_a.shape[1], r5_b.shape[1], r7_a.shape[1], r7_b.shape[1]]
    gathered = cross_replica_concat(tf.concat([r5_a, r5_b, r7_a, r7_b], axis=1))
    all_r5_a, all_r5_b, all_r7_a, all_r7_b = tf.split(gathered, sizes, axis=1)

    terms, penalties = [], []
    for src_a, trg_b, src_b, trg_a in ((r1_a, all_r5_b, r1_b, all_r5_a), (r1_a, all_r7_b, r1_b, all_r7_a),
                                       (r5_src_a, all_r5_b, r5_src_b, all_r5_a)):
        forward = _nce_on_gathered(src_a, trg_b, own, clip, penalty_weight)
        backward = _nce_on_gathered(src_b, trg_a, own, clip, penalty_weight)
        terms.append(0.5 * (forward.loss + backward.loss))
        penalties += [forward.penalty, backward.penalty]
    penalty = tf.add_n(penalties) / len(penalties)
    loss = tf.add_n(terms) / len(terms) + penalty
    return AMDIMOutput(loss, terms[0], terms[1], terms[2], penalty)
