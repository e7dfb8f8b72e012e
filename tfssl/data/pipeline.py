"""tf.data pipelines for pre-training: shuffle, batch, augment on the host, prefetch.

Every epoch's order and every batch's augmentation seed are functions of (seed, epoch, batch), so a
run resumed at step s sees exactly the batches an uninterrupted run would have seen from step s on.
"""
import tensorflow as tf

from tfssl.augment.recipes import as_view_recipe, batch_seed, epoch_seed

_SHUFFLE_BUFFER_MAX = 100_000

__all__ = ["epoch_seed", "pretrain_dataset"]


def pretrain_dataset(split, global_batch_size, epoch=0, seed=0, augment=None, skip_batches=0, with_index=False):
    """Batches of one pre-training epoch, as the dicts `tfssl.methods.SSLMethod.train_step` takes.

    Args:
      split: `tfssl.data.DataSplit` (elements `(image uint8 [H,W,C], label, index)`).
      global_batch_size: images per step over all replicas; the last partial batch is dropped so every
        step has the same shape (and the same number of negatives).
      epoch: epoch number (selects the shuffle order and augmentation seeds).
      seed: run seed.
      augment: host-side `tfssl.augment.ViewRecipe` (a `ViewPair` or one per-image recipe is taken as a
        recipe of two views); None leaves augmentation to the device.
      skip_batches: batches of this epoch already trained on (resume).
      with_index: add each image's index in the split (InstDis' memory-bank row).

    Returns:
      A dataset of `{"views": (float32 view, ...), "labels"[, "index"]}` when `augment` is given, else of
      `{"images": uint8, "seed": int64 [B, 2], "labels"[, "index"]}`: every row of "seed" is the batch's
      `batch_seed(seed, epoch, batch)`, the seed the device-side recipe makes the views from.
    """
    recipe = as_view_recipe(augment)
    buffer = max(1, min(split.num_examples, _SHUFFLE_BUFFER_MAX))
    ds = split.dataset.shuffle(buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)
    ds = ds.batch(global_batch_size, drop_remainder=True)
    ds = ds.enumerate().skip(skip_batches)

    def to_batch(batch_index, element):
        images, labels, index = element
        this_seed = batch_seed(seed, epoch, batch_index)
        batch = {"labels": labels}
        if recipe is not None:
            batch["views"] = recipe(images, this_seed)
        else:
            # One row per example, so that a distributed dataset hands every replica the batch's seed.
            batch["images"] = images
            batch["seed"] = tf.tile(this_seed[None], [tf.shape(labels)[0], 1])
        if with_index:
            batch["index"] = index
        return batch

    ds = ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE)
    # Under MultiWorkerMirroredStrategy every worker builds the same global batches and keeps its replicas'
    # slice (DATA sharding, chosen for every source: FILE sharding would give each worker its own files and
    # so a different order, breaking "the batch of step s is a function of (seed, epoch, batch)").
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
