"""Regression losses of the non-contrastive methods: BYOL's normalised MSE and SimSiam's negative cosine.

Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020,
eq. (2); Chen, He. "Exploring Simple Siamese Representation Learning", CVPR 2021, eq. (1)-(2).
"""
import tensorflow as tf

from tfssl.losses.infonce import check_embedding_pair


def _cosine_to_constant_target(predictions, targets, names):
    """Row-wise cosine similarity `[n]` between predictions and stop-gradient targets."""
    predictions, targets = check_embedding_pair(predictions, targets, names)
    # The target branch is never trained by this loss: that asymmetry is what prevents collapse.
    targets = tf.stop_gradient(targets)
    return tf.reduce_sum(
        tf.math.l2_normalize(predictions, axis=1) * tf.math.l2_normalize(targets, axis=1), axis=1
    )


def normalized_mse_loss(predictions, targets):
    """BYOL: mean over the batch of ||p/|p| - t/|t| ||^2 = 2 - 2 cos(p, t), with t a constant.

    One direction only; BYOL symmetrises by swapping the views and adding the two losses. The value
    is the local mean (the caller divides by the replica count once, so that summed per-replica
    gradients equal the gradient of the global-batch mean; nothing crosses replicas here).

    Args:
      predictions: `[n, d]` online predictor outputs q(z).
      targets: `[n, d]` target-network projections z' of the other view (gradient stopped here).

    Returns:
      Scalar float32 loss in [0, 4] (before the replica division).
    """
    cosine = _cosine_to_constant_target(predictions, targets, ("predictions", "targets"))
    return tf.reduce_mean(2.0 - 2.0 * cosine)


def negative_cosine_loss(p, z):
    """SimSiam: D(p, z) = -mean over the batch of cos(p, stop_gradient(z)).

    One direction only; SimSiam's loss is D(p1, z2) / 2 + D(p2, z1) / 2. The local mean, like
    `normalized_mse_loss`.

    Args:
      p: `[n, d]` predictor outputs.
      z: `[n, d]` projections of the other view (gradient stopped here).

    Returns:
      Scalar float32 loss in [-1, 1] (before the replica division).
    """
    cosine = _cosine_to_constant_target(p, z, ("p", "z"))
    return -tf.reduce_mean(cosine)
