"""Shuffled batch norm (MoCo sec. 3.3): encode a key batch so no key shares BN statistics with its query.

A query and its key are encoded in the same batch, so batch statistics let the network tell which key
belongs to the batch of the query and "cheat" the pretext task. The key batch is shuffled before the key
encoder sees it and unshuffled after, so each key is normalised with the statistics of a different group
of images than its query. The groups are the replicas (the paper's GPUs); `splits` additionally cuts each
replica's batch into that many groups, normalised separately -- on one device that is the only way to get
more than one group. Sync BN would normalise over the whole global batch and re-open the leak.
"""
import tensorflow as tf

from tfssl import rng
from tfssl.distribute import cross_replica_concat, replica_id_and_count


def shuffle_permutation(global_size, seed):
    """A random permutation of `range(global_size)`, the same on every replica (stateless in `seed`)."""
    noise = rng.uniform([global_size], seed)
    return tf.argsort(noise, stable=True)


def grouped_apply(network, images, groups):
    """`network(images)` with the batch cut into `groups` equal chunks, each normalised by its own BN statistics.

    Args:
      network: callable `(x, training) -> [n, d]`.
      images: `[n, ...]` with n divisible by `groups`.
      groups: number of chunks (1 = one call on the whole batch).

    Returns:
      `[n, d]`, rows in the input order.
    """
    if groups == 1:
        return network(images, training=True)
    return tf.concat([network(chunk, training=True) for chunk in tf.split(images, groups, axis=0)], axis=0)


def shuffled_apply(network, view, splits, seed):
    """`network(view)` `[n, d]` for this replica's rows, with BN groups shuffled over all replicas and splits.

    The global batch is gathered, permuted by a permutation every replica draws identically from `seed`
    (`[2]` int32), and cut into `num_replicas * splits` groups; this replica encodes its groups, the
    encoded groups are gathered again and the permutation is undone. No gradient flows back.
    """
    replica_id, num_replicas = replica_id_and_count()
    if num_replicas * splits == 1:
        return tf.stop_gradient(network(view, training=True))
    everything = cross_replica_concat(view)
    n = tf.shape(view)[0]
    perm = shuffle_permutation(tf.shape(everything)[0], seed)
    mine = tf.gather(everything, perm[replica_id * n:(replica_id + 1) * n])
    shuffled = cross_replica_concat(grouped_apply(network, mine, splits))
    # Row perm[j] of the original order was encoded at shuffled position j: scatter it back.
    restored = tf.gather(shuffled, tf.argsort(perm, stable=True))
    return tf.stop_gradient(restored[replica_id * n:(replica_id + 1) * n])
