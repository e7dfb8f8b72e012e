"""CMC as a method: the step's loss against numpy NCE / softmax over the sampled bank rows (both directions), the
step against an independent SGD update, both banks' momentum updates, learning on real images, the
representation, save / load, export and one-line errors."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.config import TrainConfig, load_flagfile
from tfssl.heads import ProjectionHead
from tfssl.methods import CMC, build_method
from tfssl.methods.cmc import cmc_encoder
from method_data import host_batch

SIZE, BATCH, DIM, N, K = 8, 6, 5, 20, 7
FLAG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "flags")


def tiny(channels, name, size=SIZE):
    inputs = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(x))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(x), name=name)


def _model(views="lab", objective="nce", temperature=0.2, size=SIZE, num_examples=N, negatives=K, seed=0, **kw):
    keras.utils.set_random_seed(seed)
    heads = [ProjectionHead(num_layers=1, output_dim=DIM, use_bn=False, name=f"projector_{v}") for v in (1, 2)]
    model = CMC(cmc_encoder(tiny(1, "encoder_1", size), tiny(2, "encoder_2", size), views), *heads,
                num_examples=num_examples, temperature=temperature, num_negatives=negatives, objective=objective,
                seed=seed, **kw)
    model.build_heads()
    return model


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(size=(BATCH, SIZE, SIZE, 3)), tf.float32)
    index = tf.constant(rng.choice(N, BATCH, replace=False), tf.int64)
    return host_batch(images, labels=tf.zeros([BATCH], tf.int64), index=index)


def _embeddings(model, images):
    """Both views' features h and unit embeddings f: encoders from the model, linear heads and norm in numpy."""
    split, encoder_1, encoder_2 = model.parts()
    out = []
    for view, encoder, head in zip(split(images), (encoder_1, encoder_2), (model.projector_1, model.projector_2)):
        h = encoder(view, training=True).numpy().astype(np.float64)
        kernel, bias = (w.numpy() for w in head.trainable_weights)
        z = h @ kernel + bias
        out.append((h, z / np.linalg.norm(z, axis=1, keepdims=True)))
    return out


def numpy_direction(f, bank, index, negatives, tau, objective, normaliser=None):
    """InstDis / CMC loss of features f against another view's bank: positive bank[index], K shared negatives.
    NCE (Wu et al. 2018, eq. 3-6): P = exp(s) / Z, Z = N * mean exp(s) over the batch, h = P / (P + K / N)."""
    s = np.concatenate([np.sum(f * bank[index], 1, keepdims=True), f @ bank[negatives].T], axis=1) / tau
    if objective == "softmax":
        return np.mean(np.log(np.exp(s).sum(1)) - s[:, 0]), None
    z = len(bank) * np.exp(s).mean() if normaliser is None else normaliser
    p = np.exp(s) / z
    h = p / (p + len(negatives) / len(bank))
    return np.mean(-np.log(h[:, 0]) - np.log(1 - h[:, 1:]).sum(1)), z


@pytest.mark.parametrize("objective", ["nce", "softmax"])
def test_step_loss_matches_numpy_in_both_directions(objective):
    model = _model(objective=objective)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    batch = _batch()
    (_, f1), (_, f2) = _embeddings(model, batch["views"][0])
    bank_1, bank_2 = model.bank_1.read().numpy(), model.bank_2.read().numpy()
    negatives = model.bank_1.sample(K, tf.constant([0, 0], tf.int64)).numpy()  # seed 0, step 0
    index = batch["index"].numpy()
    want_12, z12 = numpy_direction(f1, bank_2, index, negatives, 0.2, objective)
    want_21, z21 = numpy_direction(f2, bank_1, index, negatives, 0.2, objective)
    out = model.compute_loss(model.views(batch), batch)
    np.testing.assert_allclose(float(out.metrics["loss_1_to_2"]), want_12, rtol=1e-4)
    np.testing.assert_allclose(float(out.metrics["loss_2_to_1"]), want_21, rtol=1e-4)
    np.testing.assert_allclose(float(out.value), want_12 + want_21, rtol=1e-4)
    assert abs(want_12 - want_21) > 1e-3  # the two directions differ: a swapped bank would be caught
    if objective == "nce":  # the first step froze each direction's Z
        np.testing.assert_allclose([float(model.normalizer_1_to_2), float(model.normalizer_2_to_1)], [z12, z21],
                                   rtol=1e-4)
    assert out.features.shape == (BATCH, 16)  # both encoders' features for the probe


def test_train_step_is_sgd_and_updates_both_banks():
    model, reference = _model(linear_probe=False), _model(linear_probe=False)  # same seed: same weights
    batch, lr, tau = _batch(1), 0.05, 0.2
    index = batch["index"].numpy()
    negatives = tf.constant(reference.bank_1.sample(K, tf.constant([0, 0], tf.int64)))
    bank_1, bank_2 = reference.bank_1.read().numpy(), reference.bank_2.read().numpy()
    split, encoder_1, encoder_2 = reference.parts()
    with tf.GradientTape() as tape:
        # The loss written out again in TensorFlow (NCE from its definition, Z from this batch).
        view_1, view_2 = split(batch["views"][0])
        f1 = tf.math.l2_normalize(reference.projector_1(encoder_1(view_1, training=True)), axis=1)
        f2 = tf.math.l2_normalize(reference.projector_2(encoder_2(view_2, training=True)), axis=1)
        loss = 0.0
        for f, bank in ((f1, bank_2), (f2, bank_1)):
            rows = tf.concat([tf.gather(bank, index)[:, None], tf.gather(bank, negatives)[None].numpy().repeat(
                BATCH, 0)], axis=1)
            p = tf.exp(tf.einsum("nd,nkd->nk", f, rows) / tau)
            p = p / (N * tf.stop_gradient(tf.reduce_mean(p)))
            h = p / (p + K / N)
            loss += tf.reduce_mean(-tf.math.log(h[:, 0]) - tf.reduce_sum(tf.math.log(1 - h[:, 1:]), 1))
    variables = reference.trainable_variables
    expected = [v.numpy() - lr * g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr))
    logs = model.train_step(batch)
    np.testing.assert_allclose(float(logs["loss"]), float(loss), rtol=1e-4)
    assert len(model.trainable_variables) == len(variables) == 2 * 3 + 2 * 2  # conv + BN per encoder, 2 heads
    for before, want, after in zip(variables, expected, model.trainable_variables):
        np.testing.assert_allclose(after.numpy(), want, rtol=1e-4, atol=1e-6, err_msg=after.path)
        assert not np.allclose(after.numpy(), before.numpy()), after.path  # positive control: every one moved
    # Banks: the batch's rows <- normalise(0.5 old + 0.5 f) with this step's (pre-update) features; others kept.
    others = np.setdiff1d(np.arange(N), index)
    for bank, old, f in ((model.bank_1, bank_1, f1.numpy()), (model.bank_2, bank_2, f2.numpy())):
        new = bank.read().numpy()
        want = 0.5 * old[index] + 0.5 * f
        np.testing.assert_allclose(new[index], want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
        np.testing.assert_array_equal(new[others], old[others])
        assert not np.allclose(new[index], old[index])
    assert not model.bank_1.trainable_weights and not model.bank_2.trainable_weights


def _fashion(size, batch):
    """Endless one-view batches of 64 fixed Fashion-MNIST images with their index (mild crops, flip)."""
    from tfssl.augment import SimCLRAugment
    from tfssl.data import load_split

    images = np.stack([x.numpy() for x, _, _ in load_split("fashion_mnist", "train[:64]").dataset])
    augment = SimCLRAugment(size, color_jitter_strength=0.0, crop_area=(0.5, 1.0), jitter_prob=0.0,
                            grayscale_prob=0.0, blur=False)
    positions = np.arange(64)
    ds = tf.data.Dataset.from_tensor_slices((images, positions)).repeat().batch(batch).enumerate()
    return ds.map(lambda step, e: host_batch(augment(tf.image.convert_image_dtype(e[0], tf.float32),
                                                     tf.stack([step, step])),
                                             labels=tf.zeros([batch], tf.int64), index=e[1]))


@pytest.mark.slow  # ~30 s: fit traces the step and the two encoders
def test_short_fit_on_fashion_mnist_lowers_the_loss():
    model = _model(views="luminance_gradient", objective="softmax", temperature=0.1, size=16, num_examples=64,
                   negatives=32, linear_probe=False)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5, momentum=0.9))
    history = model.fit(_fashion(16, 16), steps_per_epoch=1, epochs=32, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses)) and losses[-6:].mean() < losses[:6].mean() - 0.3, losses


def test_representation_concatenates_both_encoders():
    model = _model(views="luminance_gradient")
    assert model.representation() is model.representation() is model.encoder
    images = tf.constant(np.random.default_rng(5).uniform(size=(3, SIZE, SIZE, 3)), tf.float32)
    split, encoder_1, encoder_2 = model.parts()
    view_1, view_2 = split(images)
    want = np.concatenate([encoder_1(view_1).numpy(), encoder_2(view_2).numpy()], axis=1)
    got = model.representation()(images, training=False).numpy()
    assert got.shape == (3, 16)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(got[:, :8], got[:, 8:])  # two different networks


def _trained_and_reloaded(tmp_path):
    model = _model(temperature=0.15)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1))
    model.train_step(_batch(2))
    path = str(tmp_path / "cmc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CMC) and (loaded.temperature, loaded.num_negatives, loaded.objective) == (0.15, K, "nce")
    assert float(loaded.normalizer_1_to_2) > 0 and loaded.parts()[0].views == "lab"
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.bank_2.read().numpy(), model.bank_2.read().numpy())
    return model, loaded


def test_save_and_load_round_trip(tmp_path):
    from tfssl.augment import center_resize

    model, loaded = _trained_and_reloaded(tmp_path)
    images = np.random.default_rng(6).integers(0, 256, size=(2, 11, 11, 3)).astype(np.uint8)
    want = model.representation()(center_resize(tf.constant(images), SIZE), training=False).numpy()
    np.testing.assert_allclose(loaded.representation()(center_resize(tf.constant(images), SIZE)).numpy(), want,
                               rtol=1e-6)


@pytest.mark.slow
def test_export_serves_the_representation(tmp_path):
    from tfssl.augment import center_resize
    from tfssl.export import export_encoder

    model, loaded = _trained_and_reloaded(tmp_path)
    images = np.random.default_rng(6).integers(0, 256, size=(2, 11, 11, 3)).astype(np.uint8)
    want = model.representation()(center_resize(tf.constant(images), SIZE), training=False).numpy()
    version_dir = export_encoder(loaded.representation(), str(tmp_path / "serving"), SIZE, warmup=False)
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images, tf.float32))
    np.testing.assert_allclose(served["embedding"].numpy(), want, rtol=1e-5, atol=1e-5)


def test_one_line_errors():
    with pytest.raises(ValueError, match="unknown CMC objective 'ce'"):
        _model(objective="ce")
    with pytest.raises(ValueError, match="num_negatives must be an integer >= 1"):
        _model(negatives=0)
    with pytest.raises(ValueError, match="temperature"):
        _model(temperature=0.0)
    with pytest.raises(ValueError, match="unknown CMC views"):
        _model(views="rgb")
    model = _model(num_examples=None)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="without num_examples"):
        model.compute_loss(_batch()["views"], _batch())
    batch = dict(_batch())
    del batch["index"]
    with pytest.raises(ValueError, match="'index'"):
        _model().compute_loss(batch["views"], batch)
    base = dict(model_dir="/tmp/x", method="cmc")
    with pytest.raises(ValueError, match="^--cmc_views=lab needs colour images, fashion_mnist is grayscale"):
        TrainConfig(**base).validate()
    TrainConfig(**base, method_options={"views": "luminance_gradient"}).validate()
    for option, value, message in (("momentum", 1.0, "--cmc_momentum must be in"), ("negatives", 0, "--cmc_negatives"),
                                   ("views", "rgb", "cmc_views")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**base, method_options={"views": "luminance_gradient", option: value}).validate()


def test_flagfiles_build_the_papers_parts():
    paper = load_flagfile(os.path.join(FLAG_DIR, "cmc_imagenet.flags")).options()
    assert (paper.views, paper.temperature, paper.negatives, paper.momentum, paper.loss, paper.proj_dim) == (
        "lab", 0.07, 16384, 0.5, "nce", 128)
    config = load_flagfile(os.path.join(FLAG_DIR, "cmc_fashion_mnist.flags"), image_size=16, augment_on="device",
                           mixed_precision="none")
    model = build_method(config, num_classes=10, num_examples=100)
    split, encoder_1, encoder_2 = model.parts()
    assert split.views == "luminance_gradient" and model.bank_1.size == model.bank_2.size == 100
    assert (encoder_1.input.shape[-1], encoder_2.input.shape[-1], model.encoder.input.shape[-1]) == (1, 2, 3)
    assert model.projector_1.output_dim == 128 and model.projector_1.num_layers == 1
    assert encoder_1.count_params() < encoder_2.count_params()  # separate networks, not one shared
    (group,) = model.augment.groups
    recipe = group.recipe.get_config()
    assert group.count == 1 and tuple(recipe["crop_area"]) == (0.2, 1.0) and recipe["jitter_prob"] == 0.0
    assert recipe["grayscale_prob"] == 0.0 and recipe["flip"]
