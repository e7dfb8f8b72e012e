"""Distribution strategies from flags and the cross-replica helpers every loss shares.

Anything that crosses replicas (negatives, queues, batch statistics) goes through this module so that
it is written, and tested, once.
"""
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


_STRATEGIES = {}


def build_strategy(name="default", tpu_address=""):
    """Returns the `tf.distribute.Strategy` named by the `--strategy` flag (one per process and name).

    A multi-worker or TPU strategy must exist before anything initialises TensorFlow's context (any op,
    or a device query): `tfssl-train` creates it first thing after parsing flags; a Python caller
    calls this (or `tfssl.training.pretrain`) before running TensorFlow code. Later calls with the same
    arguments return the same strategy, so the CLI's early call and `pretrain`'s share one.

    Args:
      name: one of `STRATEGIES`.
      tpu_address: TPU name or grpc address for `name="tpu"` ("" means the local / Cloud TPU VM default).

    Returns:
      A strategy; "default" is the no-op strategy of the current thread.

    Raises:
      ValueError: one line, for an unknown name, a multi-worker strategy requested too late, a bad
        TF_CONFIG, or no TPU to connect to.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    key = (name, tpu_address)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _create(name, tpu_address)
    return _STRATEGIES[key]


def _create(name, tpu_address):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        # Cluster layout comes from the TF_CONFIG environment variable, as for every TF multi-worker job.
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            if "program startup" not in str(error):
                raise
            raise ValueError("--strategy=multi_worker must be created before TensorFlow runs anything in this "
                             "process: call tfssl.distribute.build_strategy('multi_worker') (or "
                             "tfssl.training.pretrain) before any TensorFlow op") from None
        except ValueError as error:  # a malformed TF_CONFIG
            raise ValueError(f"--strategy=multi_worker: TF_CONFIG is not a valid cluster spec "
                             f"({_first_line(error)}); see README, Scaling") from None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        where = f"--tpu_address={tpu_address}" if tpu_address else "this machine (no --tpu_address)"
        raise ValueError(f"--strategy=tpu found no TPU at {where} ({_first_line(error)}); run on a TPU VM "
                         f"or pass --tpu_address=NAME") from None
    return tf.distribute.TPUStrategy(resolver)


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def worker_role(strategy):
    """`(index, count, is_chief)` of this process among the workers of `strategy`.

    One process (every strategy but MultiWorkerMirroredStrategy) is worker 0 of 1, the chief. Under
    MultiWorkerMirroredStrategy the chief is the task of type "chief", or worker 0 when TF_CONFIG names
    no chief (TensorFlow's convention).

    Args:
      strategy: a `tf.distribute.Strategy`.

    Returns:
      `(int, int, bool)`.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 0, 1, True
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    count = sum(len(spec.get(kind, ())) for kind in ("chief", "worker"))
    if resolver.task_type in (None, "chief"):
        return 0, max(count, 1), True
    index = resolver.task_id + len(spec.get("chief", ()))
    return index, count, index == 0


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
    # An identity made here is placed on this replica's device: MultiWorkerMirroredStrategy's gather refuses
    # a tensor without a device, e.g. an input batch created outside `strategy.run` (MoCo's key shuffle).
    return ctx.all_gather(tf.identity(tensor), axis=0)


def cross_replica_sum(tensor):
    """Sums `tensor` over all replicas (every replica gets the total); the input itself on one replica.

    For statistics of the global batch that are not differentiated through (Sinkhorn's row sums,
    DINO's centre): the all-reduce of `ReplicaContext.all_reduce`, in the tensor's own dtype.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tensor
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tensor)
