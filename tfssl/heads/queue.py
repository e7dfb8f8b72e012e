"""A FIFO queue of keys held as non-trainable state (MoCo's dictionary of negatives).

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020, Alg. 1:
the newest mini-batch of keys replaces the oldest. Keys are gathered from every replica before they
are enqueued, so all replicas hold the same queue.
"""
import keras
import tensorflow as tf

from tfssl.distribute import cross_replica_concat


@keras.saving.register_keras_serializable(package="tfssl")
class KeyQueue(keras.layers.Layer):
    """`[size, dim]` ring buffer of (normalised) keys plus a write pointer.

    Args:
      size: K, the number of stored keys.
      dim: key dimension d.
      seed: seed of the random unit-norm initial contents (the paper starts from random keys).

    Use `read()` for the current `[size, dim]` contents (no gradient) and `enqueue(keys)` to update.
    """

    def __init__(self, size=65536, dim=128, seed=0, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got size={size}, dim={dim}")
        self.size, self.dim, self.seed = int(size), int(dim), int(seed)
        initial = keras.initializers.RandomNormal(seed=self.seed)
        # Every replica computes the same gathered keys, so the first replica's write is the write.
        self.keys = self.add_weight(shape=(self.size, self.dim), initializer=initial, trainable=False,
                                    name="keys", aggregation="only_first_replica")
        self.pointer = self.add_weight(shape=(), initializer="zeros", dtype="int64", trainable=False,
                                       name="pointer", aggregation="only_first_replica")
        self.keys.assign(tf.math.l2_normalize(self.keys.value, axis=1))

    def read(self):
        """The current `[size, dim]` keys, oldest write at `pointer`; no gradient flows into them."""
        return tf.stop_gradient(tf.convert_to_tensor(self.keys.value))

    def enqueue(self, keys):
        """Writes `keys` `[n, dim]` (gathered over replicas to `[N, dim]`) over the oldest entries.

        Wraps around the end of the buffer; if N > size only the newest `size` keys are kept.
        """
        keys = tf.stop_gradient(tf.cast(cross_replica_concat(keys), self.keys.dtype))
        total = tf.shape(keys, out_type=tf.int64)[0]
        keep = tf.minimum(total, self.size)
        keys = keys[total - keep:]
        slots = (self.pointer.value + tf.range(keep, dtype=tf.int64)) % self.size
        self.keys.assign(tf.tensor_scatter_nd_update(self.keys.value, slots[:, None], keys))
        self.pointer.assign((self.pointer.value + keep) % self.size)

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, dim=self.dim, seed=self.seed)
        return config
