"""CPC v2 as a method: its step's loss against a numpy InfoNCE over every location of the batch, the gradient
step against an independent SGD update, learning on real images, the patch-grid-mean representation against
numpy, save / load, export and one-line option errors."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.config import TrainConfig, load_flagfile
from tfssl.methods import CPCv2, build_augment, build_method
from method_data import host_batch

SIZE, GRID, BATCH = 16, 3, 4  # 16 px -> 3 x 3 patches of 8 px, stride 4
FLAG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "flags")
TINY = dict(grid=GRID, steps="1,2", patch_encoder="resnet18", patch_width=0.0625, patch_cifar_stem=True,
            context_blocks=1, context_hidden=8, target_dim=4, color_drop_prob=0.0)


def _tiny_patch_encoder(name, channels=3, width_multiplier=1.0, cifar_stem=True, norm="layer", name_prefix="encoder"):
    """Stands in for `build_resnet_ln` (whose ResNet-18 traces ~10x slower): patches -> 2 x (conv, layer norm
    over H, W, C, ReLU) -> mean pool -> `[N, 8]`. The method does not depend on the backbone; the generic
    export / resume tests (-m slow) run the real LN ResNet."""
    del name, width_multiplier, cifar_stem, norm
    inputs = keras.Input((None, None, channels), name="patches")
    x = inputs
    for i, filters in enumerate((4, 8)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"conv{i}")(x)
        x = keras.layers.GroupNormalization(groups=1, name=f"ln{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pooled")(x), name=name_prefix)


@pytest.fixture(autouse=True)
def tiny_patch_encoder(monkeypatch):
    import tfssl.encoders

    monkeypatch.setattr(tfssl.encoders, "build_resnet_ln", _tiny_patch_encoder)


def _config(image_size=SIZE, **options):
    return TrainConfig(model_dir="/tmp/unused", method="cpc_v2", image_size=image_size,
                       method_options={**TINY, **options})


def _model(seed=0, num_classes=None, **options):
    keras.utils.set_random_seed(seed)
    return build_method(_config(**options), num_classes=num_classes)


def _patches(seed=0, batch=BATCH):
    images = np.random.default_rng(seed).uniform(size=(batch, SIZE, SIZE, 3)).astype(np.float32)
    return build_augment(_config())(tf.constant(images), tf.constant([seed, 7], tf.int64))[0]


def numpy_cpc(targets, predictions, steps, reduction="sum"):
    """For step k, every (b, i, j) with i + k < G: -log softmax over all B * G * G target locations of
    prediction . target, the positive being target (b, i + k, j); mean over positions, then over steps."""
    t = np.asarray(targets, np.float64)
    b_, g, w, d = t.shape
    flat = t.reshape(-1, d)
    losses = []
    for k, p in zip(steps, predictions):
        p = np.asarray(p, np.float64)
        terms = []
        for b in range(b_):
            for i in range(g - k):
                for j in range(w):
                    logits = flat @ p[b, i, j]
                    positive = (b * g + i + k) * w + j
                    top = logits.max()
                    terms.append(top + np.log(np.exp(logits - top).sum()) - logits[positive])
        losses.append(np.mean(terms))
    return np.sum(losses) if reduction == "sum" else np.mean(losses)


def _parts(model, patches):
    """z (each patch encoded on its own, placed at its grid cell), targets and scaled predictions."""
    p = patches.numpy()
    z = np.zeros((p.shape[0], GRID, GRID, int(model.encoder.output.shape[-1])), np.float32)
    for b in range(p.shape[0]):
        for i in range(GRID):
            z[b, i] = model.encoder(p[b, i], training=True).numpy()  # row i's G patches
    targets = model.target_projector(z).numpy()
    predictions = [x.numpy() * model.emb_scale for x in model.predictor(model.context(z))]
    return z, targets, predictions


def test_step_loss_is_infonce_over_every_location_of_the_batch():
    model = _model()
    patches = _patches()
    out = model.compute_loss((patches,), host_batch(patches, labels=tf.zeros([BATCH], tf.int64)))
    z, targets, predictions = _parts(model, patches)
    want = numpy_cpc(targets, predictions, (1, 2))
    np.testing.assert_allclose(float(out.value), want, rtol=1e-5)
    np.testing.assert_allclose(out.features.numpy(), z.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    # Positive control: the same terms with the wrong offsets (predicting k + 1 rows ahead) differ.
    assert abs(numpy_cpc(targets, predictions[:1], (2,)) * 2 - want) > 1e-3
    assert 0.0 <= float(out.metrics["positive_acc"]) <= 1.0


def _tf_cpc(model, patches, steps):
    """The loss written out again in TensorFlow (no library loss): logits against all locations, log-softmax."""
    flat = tf.reshape(patches, [-1, *patches.shape[3:]])
    z = tf.reshape(model.encoder(flat, training=True), [BATCH, GRID, GRID, -1])
    targets = model.target_projector(z)
    candidates = tf.reshape(targets, [BATCH * GRID * GRID, -1])
    total = 0.0
    for k, prediction in zip(steps, model.predictor(model.context(z))):
        rows = tf.reshape(prediction[:, :GRID - k] * model.emb_scale, [-1, candidates.shape[-1]])
        positives = tf.reshape(targets[:, k:], [-1, candidates.shape[-1]])
        total += -tf.reduce_mean(tf.reduce_sum(rows * positives, axis=1)
                                 - tf.reduce_logsumexp(tf.matmul(rows, candidates, transpose_b=True), axis=1))
    return total


def test_train_step_is_an_sgd_step_on_that_loss():
    model, reference = _model(seed=1), _model(seed=1)  # same seed: same weights
    patches = _patches(1)
    lr = 0.05
    variables = reference.trainable_variables
    with tf.GradientTape() as tape:
        loss = _tf_cpc(reference, patches, (1, 2))
    expected = [v.numpy() - lr * g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
    logs = model.train_step(host_batch(patches, labels=tf.zeros([BATCH], tf.int64)))
    np.testing.assert_allclose(float(logs["loss"]), float(loss), rtol=1e-5)
    got = model.trainable_variables
    assert [v.path for v in got] == [v.path for v in variables]
    moved = 0
    for before, want, after in zip(variables, expected, got):
        np.testing.assert_allclose(after.numpy(), want, rtol=1e-4, atol=1e-6, err_msg=after.path)
        moved += not np.allclose(after.numpy(), before.numpy())
    assert moved == len(got)  # positive control: every variable (encoder, context, W_k, projection) stepped


def _fashion_patches(batch):
    from tfssl.data import load_split

    split = load_split("fashion_mnist", "train[:64]")
    images = np.stack([x.numpy() for x, _, _ in split.dataset])
    labels = np.array([y.numpy() for _, y, _ in split.dataset])
    augment = build_augment(_config(jitter_crop=1.0, flip=False))
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(batch).enumerate()
    return ds.map(lambda i, e: host_batch(augment(e[0], tf.stack([i, 3 * i]))[0], labels=e[1]))


@pytest.mark.slow  # 30 s idle, ~100 s on the loaded shared 2-core machine (30 steps)
def test_short_fit_on_fashion_mnist_lowers_the_loss():
    model = _model(num_classes=10)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-2))
    history = model.fit(_fashion_patches(16), steps_per_epoch=1, epochs=30, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses)) and losses[-5:].mean() < losses[:5].mean() - 0.3, losses
    # Above chance: 1 positive among 16 * 9 = 144 candidates.
    assert np.array(history.history["positive_acc"])[-5:].mean() > 3.0 / 144


def _numpy_representation(model, images):
    """Un-augmented 8 px patches at stride 4, each through the patch encoder, averaged per image."""
    out = []
    for image in images:
        cells = [image[4 * i:4 * i + 8, 4 * j:4 * j + 8] for i in range(GRID) for j in range(GRID)]
        out.append(model.encoder(np.stack(cells), training=False).numpy().mean(axis=0))
    return np.stack(out)


def test_representation_is_the_mean_of_the_encoded_patch_grid():
    model = _model()
    images = np.random.default_rng(3).uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    rep = model.representation()
    assert rep is model.representation() and tuple(rep.input.shape) == (None, SIZE, SIZE, 3)
    np.testing.assert_allclose(rep(images).numpy(), _numpy_representation(model, images), rtol=1e-5, atol=1e-6)
    # It shares the encoder's weights: moving them moves the representation the same way.
    before = rep(images).numpy()
    for w in model.encoder.trainable_weights:
        w.assign(w + 0.05)
    np.testing.assert_allclose(rep(images).numpy(), _numpy_representation(model, images), rtol=1e-5, atol=1e-6)
    assert not np.allclose(rep(images).numpy(), before)
    # The cached representation is no checkpoint dependency of the method (restores do not depend on it).
    assert "_representation" not in dict(model._trackable_children("checkpoint"))


def test_save_and_reload_round_trip(tmp_path):
    model = _model(num_classes=10)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    patches = _patches(2)
    model.train_step(host_batch(patches, labels=tf.zeros([BATCH], tf.int64)))
    path = str(tmp_path / "cpc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CPCv2) and loaded.steps == (1, 2) and loaded.grid == GRID
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    images = np.random.default_rng(4).uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.representation()(images).numpy(), model.representation()(images).numpy())
    batch = host_batch(patches, labels=tf.zeros([BATCH], tf.int64))
    np.testing.assert_allclose(float(loaded.compute_loss((patches,), batch).value),
                               float(model.compute_loss((patches,), batch).value), rtol=1e-6)


def test_export_serves_the_representation_of_raw_pixels(tmp_path):
    from tfssl.augment import center_resize
    from tfssl.export import export_encoder
    from tfssl.finetune.loading import load_encoder

    model = _model()
    version_dir = export_encoder(model.representation(), str(tmp_path / "serving"), SIZE, warmup=False)
    images = np.random.default_rng(5).integers(0, 256, size=(3, 28, 28, 1)).astype(np.uint8)
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images, tf.float32))
    want = model.representation()(center_resize(tf.constant(images), SIZE)).numpy()
    np.testing.assert_allclose(served["embedding"].numpy(), want, rtol=1e-5, atol=1e-5)
    # Fine-tuning's loader gets the same trainable Keras model back from the export.
    tuned = load_encoder(version_dir)
    np.testing.assert_allclose(tuned(center_resize(tf.constant(images), SIZE)).numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("image_size, options, message", [
    (30, dict(grid=7), "multiples of 8"),
    (16, dict(steps="0,2"), "cpc_v2_steps"),
    (16, dict(steps="2,3"), "must be < --cpc_v2_grid=3"),
    (16, dict(grid=1), "--cpc_v2_grid must be an integer >= 2"),
    (16, dict(context_row_kernel=2), "odd"),
    (16, dict(emb_scale=0.0), "--cpc_v2_emb_scale must be > 0"),
    (16, dict(color_drop_prob=1.5), "--cpc_v2_color_drop_prob"),
])
def test_bad_options_give_one_line_errors(image_size, options, message):
    with pytest.raises(ValueError, match=message) as error:
        _config(image_size=image_size, **options).validate()
    assert "\n" not in str(error.value)


def test_flagfiles_build_the_papers_parts():
    config = load_flagfile(os.path.join(FLAG_DIR, "cpc_v2_fashion_mnist.flags"), mixed_precision="none")
    (group,) = build_augment(config).groups
    assert group.count == 1 and (group.recipe.grid, group.recipe.patch_size, group.recipe.stride) == (6, 8, 4)
    options = load_flagfile(os.path.join(FLAG_DIR, "cpc_v2_imagenet.flags")).options()
    assert (options.grid, options.overlap, options.context_blocks, options.context_hidden, options.target_dim,
            options.emb_scale, options.patch_norm) == (7, 0.5, 5, 256, 64, 0.1, "layer")
    imagenet = load_flagfile(os.path.join(FLAG_DIR, "cpc_v2_imagenet.flags"))
    assert imagenet.image_size == 256 and build_augment(imagenet).groups[0].recipe.patch_size == 64
