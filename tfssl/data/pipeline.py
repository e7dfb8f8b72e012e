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


def pretrain_dataset(split, global_batch_size, epoch=0, seed=0, augment=None, skip_batches=0):
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

    Returns:
      A dataset of `(view1, view2, labels)` float32 views when `augment` is given, else of
      `(images uint8, labels)`.
    """
    buffer = max(1, min(split.num_examples, _SHUFFLE_BUFFER_MAX))
    ds = split.dataset.shuffle(buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)
    ds = ds.batch(global_batch_size, drop_remainder=True)
    ds = ds.enumerate().skip(skip_batches)
    if augment is not None:
        base = tf.constant(epoch_seed(seed, epoch), tf.int64)

        def make_views(batch_index, element):
            images, labels, _ = element
            counter = batch_index * 2
            view1 = view_recipe(augment, 0)(images, tf.stack([base, counter]))
            view2 = view_recipe(augment, 1)(images, tf.stack([base, counter + 1]))
            return view1, view2, labels

        ds = ds.map(make_views, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda _, element: (element[0], element[1]), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
