"""Solarisation and BYOL's asymmetric view pair: numpy reference, probability edges, per-view recipes, config."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import (
    BYOLAugment,
    SimCLRAugment,
    ViewPair,
    byol_views,
    deserialize_augment,
    ops,
    serialize_augment,
    view_recipe,
)


def _numpy_solarize(x, threshold=0.5):
    out = x.copy()
    out[x >= threshold] = 1.0 - x[x >= threshold]
    return out


def test_solarize_matches_numpy_and_closed_values(rng):
    x = rng.uniform(size=(3, 5, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(ops.solarize(tf.constant(x)).numpy(), _numpy_solarize(x), atol=1e-7)
    np.testing.assert_allclose(ops.solarize(tf.constant(x), 0.3).numpy(), _numpy_solarize(x, 0.3), atol=1e-7)
    edges = tf.constant([0.0, 0.25, 0.49, 0.5, 0.75, 1.0], shape=(1, 1, 6, 1))
    np.testing.assert_allclose(ops.solarize(edges).numpy().ravel(), [0.0, 0.25, 0.49, 0.5, 0.25, 0.0], atol=1e-6)
    # threshold 1 leaves everything below 1 alone; threshold 0 inverts the whole image.
    np.testing.assert_allclose(ops.solarize(tf.constant(x), 0.0).numpy(), 1.0 - x, atol=1e-7)
    with pytest.raises(ValueError, match="threshold"):
        ops.solarize(tf.constant(x), 1.5)


def test_random_solarize_draws_per_image(rng, run_in_dataset):
    x = rng.uniform(size=(32, 4, 4, 3)).astype(np.float32)
    seed = tf.constant([7, 8])
    y = ops.random_solarize(tf.constant(x), seed, 0.5).numpy()
    solarized = np.array([np.allclose(y[i], _numpy_solarize(x[i])) for i in range(32)])
    untouched = np.array([np.allclose(y[i], x[i]) for i in range(32)])
    assert np.all(solarized | untouched)
    assert 4 <= solarized.sum() <= 28  # some of each: one draw per image, not one per batch
    np.testing.assert_array_equal(ops.random_solarize(tf.constant(x), seed, 0.0).numpy(), x)
    np.testing.assert_allclose(ops.random_solarize(tf.constant(x), seed, 1.0).numpy(), _numpy_solarize(x), atol=1e-7)
    np.testing.assert_allclose(run_in_dataset(lambda b, s: ops.random_solarize(b, s, 0.5), x, [7, 8]), y, atol=1e-7)
    with pytest.raises(ValueError, match="solarize_prob"):
        ops.random_solarize(tf.constant(x), seed, -0.1)


def test_byol_augment_without_solarize_equals_simclr_augment(rng):
    """The solarize stage has its own seed salt: switching it on leaves the SimCLR stages' draws unchanged."""
    x = tf.constant(rng.uniform(size=(6, 12, 12, 3)).astype(np.float32))
    seed = tf.constant([3, 4])
    args = dict(color_jitter_strength=0.5, blur=True, blur_prob=0.5)
    plain = SimCLRAugment(10, **args)(x, seed).numpy()
    np.testing.assert_allclose(BYOLAugment(10, solarize_prob=0.0, **args)(x, seed).numpy(), plain, atol=1e-6)
    always = BYOLAugment(10, solarize_prob=1.0, **args)(x, seed).numpy()
    np.testing.assert_allclose(always, _numpy_solarize(plain), atol=1e-6)


def test_byol_views_probabilities_and_view_selection(rng):
    pair = byol_views(40, color_jitter_strength=0.5, blur=True)
    first, second = pair.view(0), pair.view(1)
    assert (first.blur_prob, first.solarize_prob, second.blur_prob, second.solarize_prob) == (1.0, 0.0, 0.1, 0.2)
    assert first.color_jitter_strength == second.color_jitter_strength == 0.5
    assert view_recipe(pair, 0) is first and view_recipe(pair, 1) is second
    simclr = SimCLRAugment(8)
    assert view_recipe(simclr, 0) is simclr and view_recipe(simclr, 1) is simclr
    with pytest.raises(TypeError):
        pair(tf.zeros((1, 8, 8, 3)), tf.constant([0, 0]))
    with pytest.raises(ValueError, match="view index"):
        pair.view(2)
    # Over many images the second view is solarized about 20% of the time, the first never. A solarized
    # bright image becomes dark, so count views much darker than a no-solarize rendering of the same draw.
    x = tf.constant(rng.uniform(0.7, 1.0, size=(200, 40, 40, 3)).astype(np.float32))
    seed = tf.constant([1, 1])
    no_solar = BYOLAugment(40, solarize_prob=0.0, color_jitter_strength=0.5, blur=True, blur_prob=0.1)(x, seed)
    darker = np.mean(second(x, seed).numpy() < no_solar.numpy() - 0.05, axis=(1, 2, 3)) > 0.3
    assert 0.1 < darker.mean() < 0.3, darker.mean()
    no_solar_first = BYOLAugment(40, color_jitter_strength=0.5, blur=True, blur_prob=1.0)(x, seed)
    np.testing.assert_allclose(first(x, seed).numpy(), no_solar_first.numpy(), atol=1e-6)


def test_recipes_serialise_and_legacy_configs_load():
    pair = byol_views(32, color_jitter_strength=0.25, crop_area=(0.3, 1.0))
    restored = deserialize_augment(serialize_augment(pair))
    assert isinstance(restored, ViewPair)
    assert [r.get_config() for r in restored.recipes] == [r.get_config() for r in pair.recipes]
    assert restored.view(1).solarize_prob == 0.2 and restored.view(0).crop_area == (0.3, 1.0)
    simclr = SimCLRAugment(16, blur_prob=0.3)
    assert deserialize_augment(serialize_augment(simclr)).get_config() == simclr.get_config()
    # A bare SimCLRAugment config, as SSLMethod.get_config wrote it before view pairs existed.
    assert isinstance(deserialize_augment(simclr.get_config()), SimCLRAugment)
    assert serialize_augment(None) is None and deserialize_augment(None) is None
    with pytest.raises(ValueError, match="view recipe"):
        deserialize_augment({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match="solarize_prob"):
        BYOLAugment(8, solarize_prob=2.0)
    with pytest.raises(ValueError, match="first"):
        ViewPair(None, simclr)
