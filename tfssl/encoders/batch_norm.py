"""Keras 3's BatchNormalization on TensorFlow's fused batch-norm kernel.

Keras 3 computes batch norm as separate ops (mean, squared difference, mean, subtract, multiply, add, and
as many again for the gradient); in the profile of the Fashion-MNIST SimCLR step they took 29% of the op
time (`benchmarks/profile_step.py`). TensorFlow's `FusedBatchNormV3` (oneDNN's, where oneDNN is on) does
the forward pass and its gradient in one kernel each. This layer keeps Keras 3's arguments, variables,
statistics and checkpoints, and takes the fused kernel for the cases it covers: 4-D NHWC inputs, no mask,
no renormalisation, and no synchronisation across more than one replica (synchronised BN needs the
cross-replica sums of Keras 3's own path). Everything else goes to the parent class unchanged.

Keras 3 keeps the biased batch variance in `moving_variance`; the fused kernel returns the unbiased one
(n / (n - 1)), which is scaled back here, so both paths update the moving statistics identically.
"""
import keras
import tensorflow as tf


def _replicas_in_sync():
    return tf.distribute.get_strategy().num_replicas_in_sync if tf.distribute.has_strategy() else 1


@keras.saving.register_keras_serializable(package="tfssl")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed with `FusedBatchNormV3` where it can (see the module)."""

    def _fused(self, inputs, mask):
        return (mask is None and not self.renorm and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and not (self.synchronized and _replicas_in_sync() > 1))

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # as Keras 3: statistics in float32 under mixed precision
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                                 data_format="NHWC", is_training=True)
            shape = tf.shape(x)
            count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
            variance = variance * tf.maximum(count - 1.0, 0.0) / tf.maximum(count, 1.0)  # back to biased
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)
        return tf.cast(y, self.compute_dtype)
