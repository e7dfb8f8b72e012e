"""Redundancy-reduction losses on global-batch statistics: Barlow Twins and VICReg.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021, eq. (1)-(2); Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning", ICLR 2022, eq. (1)-(6).

Both losses are functions of statistics over the *global* batch. Each replica gathers both views
from all replicas and computes the same global loss; the caller divides it by the number of replicas
once. The gradient of the gather sums, over replicas, the gradients reaching each replica's slice,
so the sum of per-replica gradients of loss / num_replicas is exactly the gradient of the global
loss on one device. The returned components are the
global, unweighted, unscaled terms (identical on every replica: aggregate them with MEAN, not SUM).
"""
import tensorflow as tf

from tfssl.distribute import cross_replica_concat
from tfssl.losses.infonce import check_embedding_pair


def _check_number(name, value, minimum, inclusive):
    """Raises ValueError unless `value` is a number >= `minimum` (> when not `inclusive`)."""
    ok = isinstance(value, (int, float)) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        raise ValueError(f"{name} must be a number {'>=' if inclusive else '>'} {minimum}, got {value!r}")


def _gather_global_views(z1, z2):
    """Validates a pair of `[n, d]` views, gathers them over replicas, checks the global batch >= 2."""
    z1, z2 = check_embedding_pair(z1, z2, ("z1", "z2"))
    z1 = cross_replica_concat(z1)
    z2 = cross_replica_concat(z2)
    global_n = tf.compat.dimension_value(z1.shape[0])
    if global_n is not None and global_n < 2:
        raise ValueError(f"batch statistics need a global batch of at least 2 examples, got {global_n}")
    return z1, z2


def _off_diagonal_square_sum(matrix):
    """Sum of squares of the off-diagonal entries of a square matrix (diagonal zeroed, not subtracted)."""
    off = tf.linalg.set_diag(matrix, tf.zeros_like(tf.linalg.diag_part(matrix)))
    return tf.reduce_sum(tf.square(off))


def barlow_twins_loss(z1, z2, lambd=0.0051, scale=1.0, eps=1e-5):
    """Barlow Twins: push the cross-correlation of the two views' features to the identity.

    Each view is standardised per feature over the global batch (mean and *biased* variance, i.e.
    a BatchNorm without affine parameters in training mode, as in the paper's code), then
    `C = z1n^T z2n / N` with N the global batch size and

        global = scale * (sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2)

    Args:
      z1: `[n, d]` projections of view 1 on this replica.
      z2: `[n, d]` projections of view 2, row i the same image as `z1[i]`.
      lambd: weight >= 0 of the redundancy (off-diagonal) term; 0.0051 in the paper (d = 8192).
      scale: factor > 0 on the whole loss (some re-implementations rescale it, e.g. for small d).
      eps: > 0 added to the variance before the square root (BatchNorm's default 1e-5).

    Returns:
      `(loss, components)`: scalar float32 loss (the global value, the same on every replica);
      components `{"on_diagonal": sum_i (1 - C_ii)^2, "off_diagonal": sum_{i != j} C_ij^2}` global and
      unweighted.
    """
    _check_number("lambd", lambd, 0, inclusive=True)
    _check_number("scale", scale, 0, inclusive=False)
    _check_number("eps", eps, 0, inclusive=False)
    z1, z2 = _gather_global_views(z1, z2)

    def standardize(z):
        mean, variance = tf.nn.moments(z, axes=[0])
        return (z - mean) * tf.math.rsqrt(variance + eps)

    global_n = tf.cast(tf.shape(z1)[0], tf.float32)
    correlation = tf.matmul(standardize(z1), standardize(z2), transpose_a=True) / global_n
    on_diagonal = tf.reduce_sum(tf.square(1.0 - tf.linalg.diag_part(correlation)))
    off_diagonal = _off_diagonal_square_sum(correlation)
    loss = scale * (on_diagonal + lambd * off_diagonal)
    return loss, {"on_diagonal": on_diagonal, "off_diagonal": off_diagonal}


def vicreg_loss(z1, z2, sim_weight=25.0, var_weight=25.0, cov_weight=1.0, eps=1e-4, gamma=1.0):
    """VICReg: invariance + variance hinge + covariance decorrelation, all over the global batch.

    With N the global batch, d the feature dimension, variances and covariances *unbiased* (N - 1):

        invariance = mean over N x d entries of (z1 - z2)^2
        v(z)       = mean_j max(0, gamma - sqrt(Var(z_j) + eps))
        c(z)       = sum_{i != j} Cov(z)_ij^2 / d
        global     = sim_weight * invariance + var_weight * (v(z1) + v(z2)) / 2
                     + cov_weight * (c(z1) + c(z2))

    The variance term averages the two branches and the covariance term sums them: that is the
    authors' released code (main_vicreg.py), with which the default weights 25 / 25 / 1 were tuned;
    the paper's eq. (6) writes both as sums.

    Args:
      z1: `[n, d]` expander outputs of view 1 on this replica.
      z2: `[n, d]` expander outputs of view 2, row i the same image as `z1[i]`.
      sim_weight: lambda >= 0, weight of the invariance term.
      var_weight: mu >= 0, weight of the variance term.
      cov_weight: nu >= 0, weight of the covariance term.
      eps: > 0 inside the square root of the standard deviation (keeps its gradient finite).
      gamma: target standard deviation > 0.

    Returns:
      `(loss, components)`: scalar float32 loss (the global value, the same on every replica);
      components `{"invariance", "variance": (v(z1) + v(z2)) / 2, "covariance": c(z1) + c(z2)}` global
      and unweighted.
    """
    for name, weight in (("sim_weight", sim_weight), ("var_weight", var_weight), ("cov_weight", cov_weight)):
        _check_number(name, weight, 0, inclusive=True)
    _check_number("eps", eps, 0, inclusive=False)
    _check_number("gamma", gamma, 0, inclusive=False)
    z1, z2 = _gather_global_views(z1, z2)
    invariance = tf.reduce_mean(tf.square(z1 - z2))

    def variance_and_covariance(z):
        dof = tf.cast(tf.shape(z)[0] - 1, tf.float32)
        dim = tf.cast(tf.shape(z)[1], tf.float32)
        centred = z - tf.reduce_mean(z, axis=0)
        std = tf.sqrt(tf.reduce_sum(tf.square(centred), axis=0) / dof + eps)
        hinge = tf.reduce_mean(tf.nn.relu(gamma - std))
        covariance = tf.matmul(centred, centred, transpose_a=True) / dof
        return hinge, _off_diagonal_square_sum(covariance) / dim

    v1, c1 = variance_and_covariance(z1)
    v2, c2 = variance_and_covariance(z2)
    variance = (v1 + v2) / 2.0
    covariance = c1 + c2
    loss = sim_weight * invariance + var_weight * variance + cov_weight * covariance
    return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}
