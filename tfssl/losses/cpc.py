"""CPC's InfoNCE over a patch-feature grid, with negatives from every location of every image of the global batch.

Hénaff et al. 2019, "Data-Efficient Image Recognition with Contrastive Predictive Coding" (CPC v2), its
InfoNCE objective and the pseudo-code of its appendix (van den Oord et al. 2018, "Representation Learning
with Contrastive Predictive Coding", for the original): for a step k, the
prediction zhat[b, i + k, j] = W_k c[b, i, j] must pick the true z[b, i + k, j] out of
{z[b', i', j'] : every image b' and location (i', j')}:

    L_k = mean over valid (b, i, j) of  -log softmax_{(b', i', j')}( zhat . z[b', i', j'] / T )[(b, i + k, j)],

the valid positions being i + k < H. Where this differs from the pseudo-code: the candidates are the
*global* batch's locations (gathered from all replicas), not only the replica's own; the step losses are
*averaged* (`step_reduction="mean"`, so the loss scale does not grow with the number of steps; the
pseudo-code sums them, which `step_reduction="sum"` gives); `temperature` T plays the part of the
pseudo-code's emb_scale (0.1 on the predictions is T = 10). Targets keep their gradient (the encoder learns
through both sides, as in CPC). As the repo's other losses, the value is this replica's local mean; the
caller divides it by the replica count once, so summed per-replica gradients are the global mean's.
"""
import collections

import tensorflow as tf

from tfssl.distribute import cross_replica_concat, replica_id_and_count
from tfssl.losses.nt_xent import check_temperature

CPCOutput = collections.namedtuple("CPCOutput", ["loss", "accuracy", "step_losses", "step_accuracies"])
STEP_REDUCTIONS = ("mean", "sum")


def _check_grid(z):
    z = tf.cast(tf.convert_to_tensor(z), tf.float32)
    if z.shape.rank != 4 or None in z.shape[1:]:
        raise ValueError(f"z must be a feature grid [B, H, W, D] with static H, W, D, got shape {z.shape}")
    return z


def _check_steps(steps, height):
    try:
        steps = tuple(steps)
    except TypeError:
        steps = None
    if not steps or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < height for k in steps) \
            or len(set(steps)) != len(steps):
        raise ValueError(f"steps must be distinct integers k with 1 <= k < {height} (the grid height: row i + k "
                         f"must exist), got {steps!r}")
    return steps


def _valid_rows(prediction, k, height, width, dim):
    """The rows of `prediction` that predict something: `[n, H - k, W, D]` from `[n, H, W, D]` (or as given)."""
    prediction = tf.cast(tf.convert_to_tensor(prediction), tf.float32)
    shape = prediction.shape
    if shape.rank != 4 or shape[2] != width or shape[3] != dim or shape[1] not in (height, height - k):
        raise ValueError(f"the prediction for step {k} must be [B, {height}, {width}, {dim}] (or its "
                         f"{height - k} valid rows), got shape {shape}")
    return prediction[:, :height - k] if shape[1] == height else prediction


def cpc_infonce_loss(z, predictions, steps, temperature=1.0, step_reduction="mean"):
    """CPC InfoNCE of the predictions of every step, negatives from the global batch's grid locations.

    Args:
        z: `[n, H, W, D]` targets of this replica's images (the encoded patch grid, or a projection of it).
        predictions: one tensor per step, in `steps` order (a list, or stacked `[K, n, H, W, D]`):
            `[n, H, W, D]` whose row i predicts z row i + k (rows i >= H - k are ignored; `CPCPredictor`'s
            output), or only the `[n, H - k, W, D]` valid rows.
        steps: distinct ints k with 1 <= k < H, the offsets (in rows) that were predicted.
        temperature: logits are `zhat . z / temperature`, > 0.
        step_reduction: "mean" or "sum" of the per-step losses.

    Returns:
        `CPCOutput(loss, accuracy, step_losses, step_accuracies)`: scalar float32 local loss; the mean over
        steps of the top-1 accuracy of finding the positive among all N * H * W candidates; float32 `[K]`
        per-step local losses and accuracies.

    Raises:
        ValueError: one line, for bad shapes, steps, temperature or reduction.
    """
    check_temperature(temperature)
    if step_reduction not in STEP_REDUCTIONS:
        raise ValueError(f"step_reduction must be one of {', '.join(STEP_REDUCTIONS)}, got {step_reduction!r}")
    z = _check_grid(z)
    _, height, width, dim = z.shape
    steps = _check_steps(steps, height)
    if isinstance(predictions, tf.Tensor) and predictions.shape.rank == 5:
        predictions = tf.unstack(predictions, axis=0)  # a stacked [K, n, H, W, D]
    if isinstance(predictions, tf.Tensor) or len(predictions) != len(steps):
        raise ValueError(f"predictions must be one tensor per step ({len(steps)} for steps {steps}), "
                         f"a list or a stacked [K, B, H, W, D]")

    n = tf.shape(z)[0]
    replica_id, _ = replica_id_and_count()
    # Candidates: every location of every image of the global batch, row-major over (image, i, j).
    candidates = tf.reshape(cross_replica_concat(z), [-1, dim])
    first_image = replica_id * n
    step_losses, step_accuracies = [], []
    for k, prediction in zip(steps, predictions):
        rows = height - k
        prediction = tf.reshape(_valid_rows(prediction, k, height, width, dim), [-1, dim])
        logits = tf.matmul(prediction, candidates, transpose_b=True) / temperature
        image = first_image + tf.range(n)
        labels = ((image[:, None, None] * height + (tf.range(rows)[None, :, None] + k)) * width
                  + tf.range(width)[None, None, :])
        labels = tf.reshape(labels, [-1])
        per_position = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        step_losses.append(tf.reduce_mean(per_position))
        hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)
        step_accuracies.append(tf.reduce_mean(tf.cast(hits, tf.float32)))
    step_losses, step_accuracies = tf.stack(step_losses), tf.stack(step_accuracies)
    loss = tf.reduce_mean(step_losses) if step_reduction == "mean" else tf.reduce_sum(step_losses)
    return CPCOutput(loss, tf.reduce_mean(step_accuracies), step_losses, step_accuracies)
