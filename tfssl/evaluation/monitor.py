"""A kNN monitor during pre-training: is the representation getting better, before any evaluation runs?

Every `--knn_monitor_every` steps the chief embeds a fixed labelled bank (the first `--knn_monitor_examples`
training images) and as many held-out queries (the first of the validation split) with the current
representation, in inference mode, and logs the weighted kNN top-1 accuracy (Wu et al. 2018: k 200, T 0.1)
as `knn_acc`. Its images are loaded once; a call costs one forward pass over 2 x examples images.
"""
import numpy as np
import tensorflow as tf

from tfssl.augment import center_resize
from tfssl.evaluation.knn import knn_accuracy


def _first_examples(split, count):
    """The first `count` (images uint8 [n, H, W, C], labels int64 [n]) of a `DataSplit`, in split order."""
    images, labels = [], []
    for element in split.dataset.take(count):
        images.append(element[0].numpy())
        labels.append(int(element[1].numpy()))
    return np.stack(images), np.asarray(labels, np.int64)


class KNNMonitor:
    """Weighted kNN accuracy of a model's `representation()` on a fixed bank and held-out queries.

    Args:
      config: `TrainConfig` (dataset, splits, image_size, knn_monitor_examples).
      k, temperature: the kNN's neighbours (clipped to the bank size) and temperature.
      batch_size: images per forward call.
    """

    def __init__(self, config, k=200, temperature=0.1, batch_size=256):
        count = config.knn_monitor_examples
        train, val = config.load_split(config.train_split), config.load_split(config.val_split)
        if train.num_classes is None:
            raise ValueError(f"--knn_monitor_every needs labels; {config.dataset}:{config.train_split} has none")
        self.num_classes = train.num_classes
        self.bank_images, self.bank_labels = _first_examples(train, count)
        self.query_images, self.query_labels = _first_examples(val, count)
        self.image_size, self.k, self.temperature, self.batch_size = config.image_size, k, temperature, batch_size

    def _embed(self, network, images):
        out = [network(center_resize(tf.constant(images[i:i + self.batch_size]), self.image_size), training=False)
               for i in range(0, len(images), self.batch_size)]
        return tf.cast(tf.concat(out, 0), tf.float32).numpy()

    def __call__(self, model):
        """kNN top-1 accuracy in [0, 1] of `model.representation()` (any SSLMethod)."""
        network = model.representation()
        bank, queries = self._embed(network, self.bank_images), self._embed(network, self.query_images)
        return knn_accuracy(bank, self.bank_labels, queries, self.query_labels, self.num_classes,
                            k=min(self.k, len(bank)), temperature=self.temperature)
