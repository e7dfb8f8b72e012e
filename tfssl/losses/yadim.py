"""YADIM's NCE on the last feature map.

Falcon & Cho, "A Framework for Contrastive Self-Supervised Learning and Designing a New Approach"
(arXiv 2009.00104, 2020; "seed 000"), the YADIM section. Anchor, positives and negatives all come
from the encoder's *last* feature map (no multiscale comparisons); the similarity is a dot product
(cosine as an ablation); the loss of an anchor r_a with positive set R+ and negative set R- is

    N(r_a, R+, R-) = -log( sum_{r+ in R+} exp(phi(r_a, r+)) / sum_{r in D} exp(phi(r_a, r)) ).

How the denominator set D is read. The paper writes the denominator as a sum over R- only. Taken
literally the loss is log-sum-exp(negatives) - log-sum-exp(positives), which has no lower bound: with a
dot product an encoder lowers it without end by scaling its features, so training diverges. The losses
the paper casts in this form (CPC's InfoNCE, AMDIM's NCE, SimCLR's NT-Xent) and the AMDIM NCE of the
authors' lightning-bolts code all put the positive in the denominator, D = R+ u R-, which makes the
loss a cross-entropy >= 0. That is the default here (`positive_in_denominator=True`); `False` gives
the literal D = R-, for ablations only.

Sets, for a last map of L = H * W locations per image (L = 1 for AMDIM's 1x1 map or a pooled [n, d]
vector): every location of view a's map is an anchor; R+ are all L locations of the same image in
view b; R- are all locations of every other image of the *global* batch in view b (gathered across
replicas). With L = 1 this is InfoNCE with cross-view in-batch negatives. `symmetric=True` (default)
also takes view b's locations as anchors against view a and averages the two directions, as AMDIM's
NCE does; the paper's formula is one direction. The returned loss is the mean over this replica's
anchors (the caller divides by the replica count once).

The similarity is phi = <r_a, r> / temperature (temperature 1: the paper's plain dot product), or the
cosine / temperature, optionally soft-clipped `clip * tanh(phi / clip)`; AMDIM's stabilisers are
temperature = sqrt(d) and clip = 20 (not in the paper's YADIM description, hence off by default).
"""
import collections
import numbers

import tensorflow as tf

from tfssl.distribute import cross_replica_concat, replica_id_and_count
from tfssl.losses.amdim import check_clip, soft_clip
from tfssl.losses.nt_xent import check_temperature

YADIM_SIMILARITIES = ("dot", "cosine")
_MASK_VALUE = 1e9

YADIMOutput = collections.namedtuple("YADIMOutput", ["loss", "logits", "positive_mask"])


def _as_locations(tensor, name):
    """`[n, L, d]` float32 from `[n, d]` (L = 1), `[n, L, d]` or a map `[n, H, W, d]` (row-major)."""
    tensor = tf.cast(tf.convert_to_tensor(tensor), tf.float32)
    rank = tensor.shape.rank
    if rank == 2:
        return tensor[:, None, :]
    if rank == 4:
        if tensor.shape[1] is None or tensor.shape[2] is None:
            raise ValueError(f"{name} needs a static spatial size, got shape {tensor.shape}")
        return tf.reshape(tensor, [-1, tensor.shape[1] * tensor.shape[2], tensor.shape[-1]])
    if rank != 3:
        raise ValueError(f"{name} must be [n, d], [n, L, d] or a feature map [n, H, W, d], got shape {tensor.shape}")
    return tensor


def _direction(anchors, candidates, own, temperature, clip, positive_in_denominator):
    """Per-anchor losses `[n * La]` of local anchors `[n, La, d]` against gathered candidates `[N, Lb, d]`."""
    n, la = tf.shape(anchors)[0], tf.shape(anchors)[1]
    global_n = tf.shape(candidates)[0]
    logits = soft_clip(tf.einsum("iad,jbd->iajb", anchors, candidates) / temperature, clip)  # [n, La, N, Lb]
    positive = tf.one_hot(own, global_n)[:, None, :, None] * tf.ones_like(logits)  # image i of view b
    flat_logits = tf.reshape(logits, [n * la, -1])
    flat_positive = tf.reshape(positive, [n * la, -1])
    log_numerator = tf.reduce_logsumexp(flat_logits - _MASK_VALUE * (1.0 - flat_positive), axis=1)
    denominator_logits = flat_logits if positive_in_denominator else flat_logits - _MASK_VALUE * flat_positive
    log_denominator = tf.reduce_logsumexp(denominator_logits, axis=1)
    return log_denominator - log_numerator, flat_logits, flat_positive


def yadim_nce(last_a, last_b, similarity="dot", temperature=1.0, clip=None, positive_in_denominator=True,
              symmetric=True):
    """YADIM's NCE between the last feature maps of two views (see the module docstring).

    Args:
      last_a: view a's last feature map on this replica: `[n, H, W, d]`, `[n, L, d]` or pooled `[n, d]`.
      last_b: view b's, the same images in the same order and shape.
      similarity: "dot" (the paper) or "cosine" (vectors L2-normalised first).
      temperature: phi is divided by it (> 0; 1 = the paper's plain dot product).
      clip: None, or c > 0 to soft-clip phi to (-c, c) as AMDIM does.
      positive_in_denominator: True: D = R+ u R- (a cross-entropy, the default, see above); False: the
        paper's literal D = R-, unbounded below; needs at least two images in the global batch.
      symmetric: average the a -> b and b -> a directions (True) or use a -> b only.

    Returns:
      `YADIMOutput(loss, logits, positive_mask)`: `loss` the float32 mean over this replica's anchors;
      `logits` `[n * La, N * Lb]` of the a -> b direction (anchor rows image-major, candidate columns
      image-major over the global batch) and its 0/1 `positive_mask`.

    Raises:
      ValueError: on an unknown similarity, a bad temperature or clip, or mismatched shapes.
    """
    if similarity not in YADIM_SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}; choose one of {', '.join(YADIM_SIMILARITIES)}")
    check_temperature(temperature)
    check_clip(clip)
    for name, flag in (("positive_in_denominator", positive_in_denominator), ("symmetric", symmetric)):
        if not isinstance(flag, (bool, numbers.Integral)):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    a, b = _as_locations(last_a, "last_a"), _as_locations(last_b, "last_b")
    if not a.shape.is_compatible_with(b.shape):
        raise ValueError(f"last_a and last_b must have the same shape, got {a.shape} and {b.shape}")
    if similarity == "cosine":
        a, b = tf.math.l2_normalize(a, axis=-1), tf.math.l2_normalize(b, axis=-1)
    n = tf.shape(a)[0]
    replica_id, _ = replica_id_and_count()
    own = replica_id * n + tf.range(n)
    gathered = cross_replica_concat(tf.concat([a, b], axis=1))
    all_a, all_b = tf.split(gathered, 2, axis=1)
    losses, logits, positive = _direction(a, all_b, own, temperature, clip, bool(positive_in_denominator))
    loss = tf.reduce_mean(losses)
    if symmetric:
        back, _, _ = _direction(b, all_a, own, temperature, clip, bool(positive_in_denominator))
        loss = 0.5 * (loss + tf.reduce_mean(back))
    return YADIMOutput(loss, logits, positive)
