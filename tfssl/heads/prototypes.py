"""SwAV's prototypes: K trainable vectors scored against each L2-normalised projection.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS
2020, sec. 3.1: the scores z^T c_k of a unit-norm projection z against the prototypes c_1..c_K are the
input of both the Sinkhorn-Knopp codes and the swapped-prediction loss. The prototypes are projected
back onto the unit sphere before every forward pass, outside the gradient (the reference code
normalises the weight of its bias-free `nn.Linear` at the start of each iteration).
"""
import numbers

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfssl")
class Prototypes(keras.layers.Layer):
    """Bias-free linear map `z -> z @ W` with `W` `[d, K]`, one prototype per column.

    Args:
      num_prototypes: K >= 1 (3000 in the paper for ImageNet).

    Call:
      `prototypes(z)` with `z` `[B, d]`, already L2-normalised by the caller, returns the `[B, K]`
      scores. Call `normalize()` before each training step (not differentiated) so the scores are
      cosine similarities.
    """

    def __init__(self, num_prototypes=3000, **kwargs):
        super().__init__(**kwargs)
        if (isinstance(num_prototypes, bool) or not isinstance(num_prototypes, numbers.Integral)
                or num_prototypes < 1):
            raise ValueError(f"num_prototypes must be an integer >= 1, got {num_prototypes!r}")
        self.num_prototypes = int(num_prototypes)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(f"Prototypes needs a known last input dimension d, got shape {input_shape}")
        # Isotropic random directions; only the direction matters once normalize() has run. Every
        # replica computes the same normalised value, so the first replica's write is the write.
        self.prototypes = self.add_weight(shape=(int(dim), self.num_prototypes), initializer="random_normal",
                                          trainable=True, name="prototypes", aggregation="only_first_replica")
        self.built = True

    def call(self, z):
        return tf.matmul(z, self.prototypes)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_prototypes,)

    def normalize(self):
        """Assigns `W` with each column (prototype, shape `[d]`) scaled to unit L2 norm; no gradient."""
        weight = tf.stop_gradient(tf.convert_to_tensor(self.prototypes.value))
        self.prototypes.assign(tf.math.l2_normalize(weight, axis=0))

    def get_config(self):
        config = super().get_config()
        config.update(num_prototypes=self.num_prototypes)
        return config
