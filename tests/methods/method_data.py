"""Batches shared by the method tests (host-augmented views, a two-replica global batch, one step).

Batches are the dicts `SSLMethod.train_step` takes: `{"views": (view, ...), "labels": ...}` (+ "index").
"""
import numpy as np
import tensorflow as tf


def host_batch(*views, labels, index=None):
    """The host-augmented batch dict of `views` (one or more `[B, S, S, 3]`), `labels` and optional `index`."""
    batch = {"views": tuple(views), "labels": labels}
    if index is not None:
        batch["index"] = index
    return batch


def fashion_views(image_size, batch):
    """Endless {"views": (view1, view2), "labels"} batches of 64 fixed Fashion-MNIST images, augmented on the host.

    Mild views (jitter 0.25, crops of >= 50% area): at 16 px and a few dozen steps the strong ImageNet
    recipe leaves too little signal to see a loss fall.
    """
    from tfssl.augment import SimCLRAugment
    from tfssl.data import load_split

    split = load_split("fashion_mnist", "train[:64]")
    images = np.stack([x.numpy() for x, _, _ in split.dataset])
    labels = np.array([y.numpy() for _, y, _ in split.dataset])
    augment = SimCLRAugment(image_size, color_jitter_strength=0.25, crop_area=(0.5, 1.0))
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(batch).enumerate()

    def views(index, element):
        x = tf.image.convert_image_dtype(element[0], tf.float32)
        return host_batch(augment(x, tf.stack([index, 2 * index])), augment(x, tf.stack([index, 2 * index + 1])),
                          labels=element[1])

    return ds.map(views)


def uneven_global_batch(global_batch, size, num_classes):
    """One {"views": (view1, view2), "labels"} batch whose second half is much brighter than the first.

    Split over two replicas, per-replica BN statistics then clearly differ from the global ones, so
    a test comparing 2 replicas with one device can tell synchronised BN from unsynchronised.
    """
    rng = np.random.default_rng(0)
    view1 = rng.uniform(size=(global_batch, size, size, 3)).astype(np.float32)
    view1[global_batch // 2:] = view1[global_batch // 2:] * 3.0 + 0.5
    view2 = (view1 + 0.1 * rng.normal(size=view1.shape)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=global_batch).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices(host_batch(view1, view2, labels=labels)).batch(global_batch)


def one_step(model, strategy, dataset):
    """Runs the training loop's own step function once on `dataset`; returns the logged values."""
    from tfssl.training import _make_step_function

    step = _make_step_function(model, strategy, jit_compile=False)
    outputs = step(iter(strategy.experimental_distribute_dataset(dataset)))
    return {name: float(value) for name, value in outputs.items()}


def random_views(seed, batch, size, num_classes, noise=0.1):
    """Fixed `(view1, view2, labels)` tensors: uniform images and a noisy copy clipped to [0, 1]
    (`host_batch(view1, view2, labels=labels)` makes the batch dict of them)."""
    rng = np.random.default_rng(seed)
    view1 = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
    view2 = np.clip(view1 + noise * rng.normal(size=view1.shape), 0, 1).astype(np.float32)
    labels = rng.integers(0, num_classes, size=batch)
    return tf.constant(view1), tf.constant(view2), tf.constant(labels, tf.int64)


def assert_same_step(replicas, want, initial, name):
    """Both replicas' values of a mirrored variable agree and equal `want`, the one-device value after the
    same step from `initial`.

    The runs sum in a different float32 order (seen: 1.8e-5 of the update on a BN beta), so the
    tolerance is 1e-4 of this variable's update size; a missing cross-replica sum (e.g. unsynchronised
    BN) moves the step by more than 1e-2 of it, which the tests show separately.

    Args:
      replicas: the variable's per-replica values (`strategy.experimental_local_results`).
      want: its value after the one-device step.
      initial: its value before the step.
      name: shown on failure.
    """
    replicas = [np.asarray(v) for v in replicas]
    assert len(replicas) == 2, name
    np.testing.assert_allclose(replicas[1], replicas[0], rtol=1e-6, atol=1e-7, err_msg=name)
    atol = 1e-4 * np.max(np.abs(np.asarray(want) - initial)) + 1e-7
    np.testing.assert_allclose(replicas[0], want, rtol=1e-4, atol=atol, err_msg=name)
