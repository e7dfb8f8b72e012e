"""tf.data pipelines for pre-training: shuffle, batch, augment on the host, prefetch.

Every epoch's order and every batch's augmentation seed are functions of (seed, epoch, batch), so a
run resumed at step s sees exactly the batches an uninterrupted run would have seen from step s on.
"""
import tensorflow as tf

from tfssl.augment import view_recipe

_SHUFFLE_BUFFER_MAX = 100_000


def epoch_seed(seed, epoch):
    """The seed of one epoch's shuffle (distinct per epoch, reproducible)."""
    return int(seed) * 1_000_003 + int(epoch)


def pretrain_dataset(split, global_batch_size, epoch=0, seed=0, augment=None, skip_batches=0, num_views=2,
                     with_index=False):
    """Batches of one pre-training epoch.

    Args:
      split: `tfssl.data.DataSplit` (elements `(image uint8 [H,W,C], label, index)`).
      global_batch_size: images per step over all replicas; the last partial batch is dropped so every
        step has the same shape (and the same number of negatives).
      epoch: epoch number (selects the shuffle order and augmentation seeds).
      seed: run seed.
      augment: host-side view recipe `augment(images, seed)`, or a `tfssl.augment.ViewPair` (one recipe
        per view); None leaves augmentation to the device.
      skip_batches: batches of this epoch already trained on (resume).
      num_views: views per image made on the host (2 for the two-view methods, 1 for InstDis).
      with_index: append each image's index in the split (InstDis' memory-bank row).

    Returns:
      A dataset of `(view1, ..., view_{num_views}, labels[, index])` float32 views when `augment` is given,
      else of `(images uint8, labels[, index])`.
    """
    if num_views not in (1, 2):
        raise ValueError(f"num_views must be 1 or 2, got {num_views}")
    buffer = max(1, min(split.num_examples, _SHUFFLE_BUFFER_MAX))
    ds = split.dataset.shuffle(buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)
    ds = ds.batch(global_batch_size, drop_remainder=True)
    ds = ds.enumerate().skip(skip_batches)

    def extra(index):
        return (index,) if with_index else ()

    if augment is not None:
        base = tf.constant(epoch_seed(seed, epoch), tf.int64)

        def make_views(batch_index, element):
            images, labels, index = element
            counter = batch_index * 2
            views = tuple(view_recipe(augment, v)(images, tf.stack([base, counter + v])) for v in range(num_views))
            return (*views, labels, *extra(index))

        ds = ds.map(make_views, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        def images_only(_, element):
            images, labels, index = element
            return (images, labels, *extra(index))

        ds = ds.map(images_only, num_parallel_calls=tf.data.AUTOTUNE)
    # Under MultiWorkerMirroredStrategy every worker builds the same global batches and keeps its replicas'
    # slice (DATA sharding, chosen for every source: FILE sharding would give each worker its own files and
    # so a different order, breaking "the batch of step s is a function of (seed, epoch, batch)").
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
