"""extract_features: same numbers as running the model by hand, cache written, reused, validated."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.evaluation import extract_features


def _tiny_encoder(image_size, dim=5, seed=0):
    """Conv -> BN (with non-trivial moving statistics) -> Dropout -> pool -> Dense.

    BN and Dropout behave differently in training mode, so matching outputs prove training=False.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    bn = keras.layers.BatchNormalization()
    x = bn(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(dim)(x)
    model = keras.Model(inputs, outputs)
    bn.moving_mean.assign(np.linspace(-0.2, 0.3, 4))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 4))
    return model


def _split(num, size, channels, seed=0):
    """Unbatched (image uint8, label int64, index int64) dataset like DataSplit.dataset."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, 3, num).astype(np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels, np.arange(num, dtype=np.int64)))
    return dataset, images, labels


class _Counting:
    """Wraps an encoder and counts how often it is invoked (traced or eager)."""

    def __init__(self, encoder):
        self.encoder, self.calls = encoder, 0

    def __call__(self, images, training=None):
        self.calls += 1
        return self.encoder(images, training=training)


def test_matches_model_on_float_rgb_images():
    # Native size == image_size, so center_resize is only uint8 -> [0, 1] and 1 -> 3 channels,
    # which numpy can compute independently.
    dataset, images, labels = _split(10, 8, channels=1)
    encoder = _tiny_encoder(8)
    features, got_labels = extract_features(encoder, dataset, 8, batch_size=4, verbose=0)
    rgb = np.repeat(images.astype(np.float32) / 255.0, 3, axis=-1)
    expected = encoder(rgb, training=False).numpy()
    assert features.dtype == np.float32 and features.shape == (10, 5)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_labels, labels)
    # Training mode would give different numbers: the comparison above can fail.
    assert not np.allclose(encoder(rgb, training=True).numpy(), expected, atol=1e-3)


def test_resizes_with_center_resize():
    from tfssl.augment import center_resize

    dataset, images, _ = _split(6, 12, channels=3)
    encoder = _tiny_encoder(8)
    features, _ = extract_features(encoder, dataset, 8, batch_size=4, verbose=0)
    expected = encoder(center_resize(images, 8), training=False).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


def test_cache_is_written_then_reused(tmp_path):
    dataset, _, labels = _split(10, 8, channels=3)
    cache = str(tmp_path / "sub" / "train.npz")  # parent directory does not exist yet
    first = _Counting(_tiny_encoder(8))
    features, got_labels = extract_features(first, dataset, 8, batch_size=4, cache_path=cache,
                                            verbose=0)
    assert first.calls > 0
    assert os.listdir(tmp_path / "sub") == ["train.npz"]  # no temporary file left behind
    with np.load(cache) as data:
        assert int(data["num_examples"]) == 10 and int(data["feature_dim"]) == 5
        np.testing.assert_array_equal(data["features"], features)

    second = _Counting(_tiny_encoder(8, seed=1))  # different weights: would give other features
    cached, cached_labels = extract_features(second, dataset, 8, batch_size=4, cache_path=cache,
                                             verbose=0)
    assert second.calls == 0
    np.testing.assert_array_equal(cached, features)
    np.testing.assert_array_equal(cached_labels, labels)
    np.testing.assert_array_equal(got_labels, labels)


def test_cache_mismatch_is_detected(tmp_path):
    dataset, _, _ = _split(10, 8, channels=3)
    cache = str(tmp_path / "feats.npz")
    extract_features(_tiny_encoder(8), dataset, 8, cache_path=cache, verbose=0)
    with pytest.raises(ValueError, match="N=10 but the current dataset gives N=6"):
        extract_features(_tiny_encoder(8), dataset.take(6), 8, cache_path=cache, verbose=0)
    with pytest.raises(ValueError, match="D=5 but the current encoder gives D=7"):
        extract_features(_tiny_encoder(8, dim=7), dataset, 8, cache_path=cache, verbose=0)


def test_corrupt_cache_is_detected(tmp_path):
    dataset, _, _ = _split(4, 8, channels=3)
    cache = str(tmp_path / "bad.npz")
    np.savez(cache, features=np.zeros((4, 5), np.float32), labels=np.zeros(3, np.int64),
             num_examples=np.int64(4), feature_dim=np.int64(5))
    with pytest.raises(ValueError, match="corrupt"):
        extract_features(_tiny_encoder(8), dataset, 8, cache_path=cache, verbose=0)
    np.savez(cache, features=np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="lacks"):
        extract_features(_tiny_encoder(8), dataset, 8, cache_path=cache, verbose=0)


def test_progress_bar_when_verbose(capsys):
    dataset, _, _ = _split(6, 8, channels=3)
    extract_features(_tiny_encoder(8), dataset, 8, batch_size=4, verbose=1)
    assert "6/6" in capsys.readouterr().out


def _bad_inputs(case):
    """(encoder, dataset, extra kwargs) for one invalid-input case."""
    dataset, images, _ = _split(4, 8, channels=3)
    encoder = _tiny_encoder(8)
    if case == "repeat":
        return encoder, dataset.repeat(), {}
    if case == "images_only":
        return encoder, tf.data.Dataset.from_tensor_slices(images), {}
    if case == "empty":
        return encoder, dataset.take(0), {}
    if case == "endpoints":  # a dict of tensors instead of the pooled [B, D] features
        return (lambda x, training=None: {"pooled": encoder(x, training=training)}), dataset, {}
    return encoder, dataset, case


@pytest.mark.parametrize(
    "case,match",
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"image_size": 0}, "image_size must be a positive integer"),
        ("repeat", "infinite"),
        ("images_only", r"\(image, label\)"),
        ("empty", "empty"),
        ("endpoints", r"one pooled feature tensor \[batch, D\]"),
    ],
)
def test_invalid_arguments(case, match):
    encoder, dataset, kwargs = _bad_inputs(case)
    args = {"image_size": 8, "verbose": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        extract_features(encoder, dataset, **args)


def test_raw_pixels_baseline_is_the_flattened_images():
    from tfssl.evaluation.run import raw_pixels

    images = np.random.default_rng(3).random((4, 5, 6, 3)).astype(np.float32)
    out = raw_pixels(tf.constant(images), training=False).numpy()
    np.testing.assert_array_equal(out, images.reshape(4, -1))  # row-major: pixel (h, w) channels c together
    features, labels = extract_features(raw_pixels, tf.data.Dataset.from_tensor_slices(
        (tf.constant(images[:, :5, :5]), tf.constant([0, 1, 2, 3]))), image_size=5, batch_size=3)
    assert features.shape == (4, 75) and labels.tolist() == [0, 1, 2, 3]
