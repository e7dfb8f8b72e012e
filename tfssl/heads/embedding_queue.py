"""A FIFO of past global-batch embeddings, per coded crop, that starts at a given step (SwAV's queue).

Caron et al. 2020, sec. 4 / `main_swav.py`: with small batches, the embeddings of past batches are
scored with the current prototypes and prepended to the Sinkhorn input, so that the equipartition
spreads over more samples. Rows enter at the front and the oldest fall off the end; the queue is used
only once full. It holds the *global* batch (gathered), the same on every replica; `local_slice`
gives each replica an equal share, so cross-replica sums over the shares see every row once.
"""
import keras
import tensorflow as tf

from tfssl.distribute import cross_replica_concat, replica_id_and_count


@keras.saving.register_keras_serializable(package="tfssl")
class EmbeddingQueue(keras.layers.Layer):
    """`[crops, length, dim]` zeros at first, and the number of rows written so far.

    Args:
      crops: number of queues (one per coded crop).
      length: rows per queue (a multiple of the global batch; the reference's 3840 at batch 256).
      dim: embedding width.
      start_step: optimizer step from which `push` writes (the reference: epoch 15 at batch 256).
    """

    def __init__(self, crops=2, length=3840, dim=128, start_step=0, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("crops", crops), ("length", length), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"queue {name} must be an integer >= 1, got {value!r}")
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"queue start_step must be an integer >= 0, got {start_step!r}")
        self.crops, self.length, self.dim, self.start_step = crops, length, dim, start_step
        # Every replica writes the same gathered rows, so the first replica's write is the write.
        self.rows = self.add_weight(shape=(crops, length, dim), initializer="zeros", trainable=False,
                                    name="rows", aggregation="only_first_replica")
        self.filled = self.add_weight(shape=(), initializer="zeros", dtype="int64", trainable=False,
                                      name="filled", aggregation="only_first_replica")

    def full(self):
        """Boolean scalar: every row holds an embedding."""
        return self.filled >= self.length

    def local_slice(self, crop):
        """This replica's `[length / replicas, dim]` share of queue `crop` (no gradient)."""
        replica_id, num_replicas = replica_id_and_count()
        share = self.length // num_replicas
        return tf.stop_gradient(self.rows[crop][replica_id * share:(replica_id + 1) * share])

    def push(self, embeddings, step):
        """Puts each crop's local `[n, dim]` embeddings (gathered over replicas) at the front, from `start_step` on.

        Gathered at every step, also before the start: a collective cannot sit inside a condition.
        """
        new = tf.stack([tf.cast(cross_replica_concat(tf.stop_gradient(e)), self.rows.dtype) for e in embeddings])
        count = tf.shape(new)[1]
        shifted = tf.concat([new, self.rows[:, :tf.maximum(self.length - count, 0)]], axis=1)[:, :self.length]
        active = tf.cast(step, tf.int64) >= self.start_step
        self.rows.assign(tf.where(active, shifted, self.rows))
        total = tf.minimum(self.filled + tf.cast(count, tf.int64), self.length)
        self.filled.assign(tf.where(active, total, self.filled))

    def get_config(self):
        return {**super().get_config(), "crops": self.crops, "length": self.length, "dim": self.dim,
                "start_step": self.start_step}
