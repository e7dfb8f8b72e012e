"""Distribution strategies from flags and the cross-replica helpers every loss shares.

Anything that crosses replicas (negatives, queues, batch statistics) goes through this module so that
it is written, and tested, once.
"""
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def build_strategy(name="default", tpu_address=""):
    """Returns the `tf.distribute.Strategy` named by the `--strategy` flag.

    Args:
      name: one of `STRATEGIES`.
      tpu_address: TPU name or grpc address for `name="tpu"` ("" means the local / Cloud TPU VM default).

    Returns:
      A strategy; "default" is the no-op strategy of the current thread.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        # Cluster layout comes from the TF_CONFIG environment variable, as for every TF multi-worker job.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def replica_id_and_count():
    """Returns `(replica_id, num_replicas)` as (int32 tensor, python int) for the current replica."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context: behave as a single replica
        return tf.constant(0, tf.int32), 1
    replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return replica_id, ctx.num_replicas_in_sync


def cross_replica_concat(tensor):
    """Concatenates `tensor` along axis 0 over all replicas, in replica-id order.

    Differentiable: the gradient reaching the gathered tensor is routed back to the replica that
    produced each slice, so summing per-replica gradients (what the optimizer does) equals the
    gradient of the global-batch loss on one device.

    Args:
      tensor: `[n, ...]` local tensor, the same `n` on every replica.

    Returns:
      `[n * num_replicas, ...]`; the input itself when there is one replica.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tensor
    return ctx.all_gather(tensor, axis=0)
