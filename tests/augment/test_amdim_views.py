"""AMDIM's views: the reflect-translation against numpy (eagerly and in tf.data), per-image draws, serialisation."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import deserialize_augment, serialize_augment
from tfssl.augment.amdim_views import AMDIMAugment, random_reflect_translate, reflect_translate


def numpy_translate(image, dy, dx, m):
    """AMDIM's RandomTranslateWithReflect: mirror copies around the image (edge not repeated), then a shifted window."""
    padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="reflect")
    h, w = image.shape[:2]
    return padded[m - dy:m - dy + h, m - dx:m - dx + w]


def test_reflect_translate_matches_numpy_per_image():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, 9, 7, 3)).astype(np.float32)
    shifts = np.array([[0, 0], [4, -4], [-3, 2], [1, 0], [-4, 4]], np.int32)
    out = reflect_translate(tf.constant(images), tf.constant(shifts), 4).numpy()
    for b in range(5):
        np.testing.assert_array_equal(out[b], numpy_translate(images[b], *shifts[b], 4))
    np.testing.assert_array_equal(out[0], images[0])  # no shift: unchanged
    assert not np.array_equal(out[1], images[1])  # positive control


def test_reflect_translate_closed_form():
    rows = np.tile(np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1), [1, 3, 1, 1])  # rows 0 1 2 3
    out = reflect_translate(tf.constant(rows), tf.constant([[0, 2]]), 2).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(out, [[2, 1, 0, 1]] * 3)  # shifted right by 2; the gap is the mirror image, edge once


def test_random_translate_in_tf_data_equals_eager_and_draws_per_image():
    images = tf.constant(np.random.default_rng(1).uniform(size=(16, 8, 8, 3)).astype(np.float32))
    seed = tf.constant([3, 4], tf.int64)
    eager = random_reflect_translate(images, seed, 2, 0.8).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(images).map(lambda x: random_reflect_translate(x, seed, 2, 0.8))))
    np.testing.assert_array_equal(mapped.numpy(), eager)
    # Every image is one of the 25 translations of itself, and images do not all take the same one.
    chosen = []
    for b in range(16):
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if np.array_equal(eager[b], numpy_translate(images[b].numpy(), dy, dx, 2))]
        assert hits
        chosen.append(hits[0])
    assert len(set(chosen)) > 3
    np.testing.assert_array_equal(random_reflect_translate(images, seed, 2, 0.0).numpy(), images.numpy())


def test_amdim_augment_views_and_serialisation():
    augment = AMDIMAugment(16, crop_area=(0.3, 1.0), color_drop_prob=0.5)
    images = tf.constant(np.random.default_rng(2).integers(0, 256, size=(6, 20, 20, 1)).astype(np.uint8))
    a = augment(images, tf.constant([1, 2]))
    assert a.shape == (6, 16, 16, 3) and 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 1.0
    np.testing.assert_array_equal(augment(images, tf.constant([1, 2])).numpy(), a.numpy())
    assert not np.allclose(augment(images, tf.constant([1, 3])).numpy(), a.numpy())
    again = deserialize_augment(serialize_augment(augment))
    assert isinstance(again, AMDIMAugment) and again.get_config() == augment.get_config()
    np.testing.assert_array_equal(again(images, tf.constant([1, 2])).numpy(), a.numpy())


def test_amdim_augment_without_random_stages_is_the_identity():
    images = tf.constant(np.random.default_rng(3).uniform(size=(4, 8, 8, 3)).astype(np.float32))
    plain = AMDIMAugment(8, flip=False, translate=0, jitter_prob=0.0, grayscale_prob=0.0)
    np.testing.assert_array_equal(plain(images, tf.constant([0, 0])).numpy(), images.numpy())


@pytest.mark.parametrize("kwargs", [dict(translate=8), dict(translate=-1), dict(jitter=(0.4, 0.4, 0.4, 0.7)),
                                    dict(grayscale_prob=1.5), dict(crop_area=(0.0, 1.0))])
def test_bad_arguments_raise_one_line(kwargs):
    with pytest.raises(ValueError) as error:
        AMDIMAugment(8, **kwargs)
    assert "\n" not in str(error.value)
