"""A memory bank: one slowly updated, L2-normalised feature per training example (non-trainable state).

Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR
2018, sec. 3.1 and 3.4: the bank stands in for the weights of a parametric classifier with one class
per image; it starts as random unit vectors and row i is pulled towards the newest feature of image i
(proximal regularisation, momentum 0.5). Writes are gathered from every replica before they are
applied, so all replicas hold the same bank.

Negatives (`sample`) are drawn per step from a stateless seed and shared by the whole global batch (every
replica draws the same indices, a resumed run draws what the uninterrupted one would have); as in the
paper's sampling, a draw may coincide with an example's own positive (with K << N it is rare).
"""
import keras
import tensorflow as tf

from tfssl.distribute import cross_replica_concat

# Folded into the sampling seed so that its stream differs from the augmentation's (seed, counter).
_SAMPLE_SALT = 0x1D15


@keras.saving.register_keras_serializable(package="tfssl")
class MemoryBank(keras.layers.Layer):
    """`[size, dim]` table of unit-norm features, row i belonging to training example i.

    Args:
      size: N, the number of training examples (indices must lie in [0, N)).
      dim: feature dimension d.
      momentum: m in [0, 1): weight of the old row in an update, `row <- normalise(m * row + (1 - m) * f)`
        (0.5 in the paper; 0 overwrites the row with the new feature).
      seed: seed of the random unit-norm initial rows.

    Use `read()` / `lookup(indices)` to read (never differentiated) and `update(indices, features)`
    after the optimizer step to write.
    """

    def __init__(self, size, dim=128, momentum=0.5, seed=0, **kwargs):
        super().__init__(**kwargs)
        if size is None or size < 1 or dim < 1:
            raise ValueError(f"memory bank size and dim must be >= 1, got size={size}, dim={dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"memory bank momentum must be in [0, 1), got {momentum}")
        self.size, self.dim, self.momentum, self.seed = int(size), int(dim), float(momentum), int(seed)
        initial = keras.initializers.RandomNormal(seed=self.seed)
        # Every replica applies the same gathered update, so the first replica's write is the write.
        self.bank = self.add_weight(shape=(self.size, self.dim), initializer=initial, dtype="float32",
                                    trainable=False, name="bank", aggregation="only_first_replica")
        # Normal rows, normalised: uniform on the unit sphere.
        self.bank.assign(tf.math.l2_normalize(self.bank.value, axis=1))
        # The layer is never called (it has no input), so it is complete once its weight exists.
        self.built = True

    def read(self):
        """The whole `[size, dim]` float32 bank; no gradient flows into it."""
        return tf.stop_gradient(tf.convert_to_tensor(self.bank.value))

    def lookup(self, indices):
        """Rows `indices` (int `[n]`, in [0, size)) of the bank: float32 `[n, dim]`, no gradient."""
        indices = tf.cast(tf.reshape(indices, [-1]), tf.int64)
        return tf.stop_gradient(tf.gather(self.bank.value, indices))

    def sample(self, count, seed):
        """`count` row indices, int64 `[count]`, uniform on [0, size) with replacement; stateless in `seed` `[2]`.

        Philox is named explicitly: "auto_select" picks another generator under XLA (jit_compile), which
        would change the draws of a run with the compile flag. The salt keeps this stream apart from the
        augmentation's streams of the same (seed, step).
        """
        seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), _SAMPLE_SALT, alg="philox")
        return tf.random.stateless_uniform([count], seed, minval=0, maxval=self.size, dtype=tf.int64, alg="philox")

    def update(self, indices, features):
        """Moves rows `indices` towards `features` and renormalises them; other rows are untouched.

        `row_i <- l2_normalize(m * row_i + (1 - m) * f_i)`. Indices and features are first gathered
        from all replicas (in replica order), so every replica writes the whole global batch. The new
        rows are all computed from the bank as it was before the call; should an index occur twice
        in one (global) batch, one of its two new values is kept.

        Args:
          indices: int `[n]` example indices on this replica, in [0, size).
          features: `[n, dim]` features of those examples (treated as constants).
        """
        indices = cross_replica_concat(tf.cast(tf.reshape(indices, [-1]), tf.int64))
        features = tf.stop_gradient(tf.cast(cross_replica_concat(features), tf.float32))
        old = tf.gather(self.bank.value, indices)
        new = tf.math.l2_normalize(self.momentum * old + (1.0 - self.momentum) * features, axis=1)
        self.bank.assign(tf.tensor_scatter_nd_update(self.bank.value, indices[:, None], new))

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, dim=self.dim, momentum=self.momentum, seed=self.seed)
        return config
