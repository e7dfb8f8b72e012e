"""The kNN monitor: its accuracy against a numpy weighted kNN on the same images, and its column in a real
pre-training run's metrics.csv at the monitored steps only."""
import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from tfssl.config import TrainConfig
from tfssl.evaluation.monitor import KNNMonitor

SPLITS = dict(dataset="fashion_mnist", train_split="train[:300]", val_split="validation[:200]", image_size=28)


def numpy_weighted_knn(bank, bank_labels, queries, query_labels, k, temperature, num_classes):
    """Wu et al. 2018: cosine similarities, the k nearest vote exp(s / T) for their class; top-1 accuracy."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    hits = 0
    for query, label in zip(queries, query_labels):
        sims = bank @ query
        nearest = np.argsort(-sims)[:k]
        votes = np.zeros(num_classes)
        for i in nearest:
            votes[bank_labels[i]] += np.exp(sims[i] / temperature)
        hits += int(np.argmax(votes) == label)
    return hits / len(queries)


class _PixelModel:
    """A stand-in method whose representation is the flattened pixels (known without any training)."""

    def representation(self):
        return lambda images, training=False: tf.reshape(images, [tf.shape(images)[0], -1])


def test_monitor_accuracy_equals_a_numpy_weighted_knn_on_the_pixels():
    config = TrainConfig(model_dir="/tmp/x", knn_monitor_every=1, knn_monitor_examples=150, **SPLITS)
    monitor = KNNMonitor(config, k=20)
    assert monitor.bank_images.shape == (150, 28, 28, 1) and monitor.query_images.shape[0] == 150
    got = monitor(_PixelModel())
    # Independent features: uint8 pixels / 255 (the 3 tiled channels of the model input change no cosine).
    flat = lambda x: x.reshape(len(x), -1).astype(np.float64) / 255.0  # noqa: E731
    want = numpy_weighted_knn(flat(monitor.bank_images), monitor.bank_labels, flat(monitor.query_images),
                              monitor.query_labels, 20, 0.1, 10)
    assert got == pytest.approx(want, abs=1e-9)
    assert 0.5 < got < 1.0  # pixels of Fashion-MNIST: far above chance (0.1), below perfect
    shuffled = np.random.default_rng(0).permutation(monitor.bank_labels)  # positive control: wrong labels
    assert numpy_weighted_knn(flat(monitor.bank_images), shuffled, flat(monitor.query_images),
                              monitor.query_labels, 20, 0.1, 10) < got - 0.2


def test_pretrain_logs_knn_acc_at_the_monitored_steps(tmp_path):
    from tfssl.training import pretrain

    config = TrainConfig(model_dir=str(tmp_path), method="simclr", encoder="resnet18", width_multiplier=0.125,
                         batch_size=32, train_steps=4, log_every=1, knn_monitor_every=3, knn_monitor_examples=64,
                         warmup_epochs=0.0, checkpoint_every=100, **{**SPLITS, "image_size": 16})
    result = pretrain(config, verbose=0)
    with open(os.path.join(tmp_path, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    logged = {int(r["step"]): r["knn_acc"] for r in rows}
    assert sorted(logged) == [1, 2, 3, 4]
    assert logged[1] == logged[2] == ""  # monitored every 3 steps and at the end
    assert 0.0 <= float(logged[3]) <= 1.0 and 0.0 <= float(logged[4]) <= 1.0
    assert result["knn_acc"] == pytest.approx(float(logged[4]), rel=1e-5)


def test_bad_monitor_settings_are_one_line_errors():
    for field, value in (("knn_monitor_every", -1), ("knn_monitor_examples", 0)):
        with pytest.raises(ValueError, match=f"--{field}") as error:
            TrainConfig(model_dir="/tmp/x", **{field: value}).validate()
        assert "\n" not in str(error.value)
