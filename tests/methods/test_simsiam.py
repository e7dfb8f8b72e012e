"""SimSiam: stop-gradient checked against an independent gradient, loss and collapse monitor against numpy,
a short run that learns, .keras round trip, build_method defaults.

The reference gradient below writes the paper's loss with its own cosine and explicit constants for the
stop-gradient side; it must equal the method's update, and must differ from the gradient without the
stop-gradient (so the check can fail).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import SimCLRAugment, batch_seed
from tfssl.config import TrainConfig
from tfssl.encoders import build_encoder
from tfssl.heads import ProjectionHead, predictor_head
from tfssl.methods import SimSiam, build_method
from method_data import host_batch, random_views

SIZE, WIDTH, BATCH, NUM_CLASSES, PROJ_DIM = 8, 0.125, 8, 3, 8
LR = 0.1


def _simsiam(seed=0, augment=None, image_size=SIZE, num_classes=NUM_CLASSES, linear_probe=True, encoder=None):
    keras.utils.set_random_seed(seed)
    encoder = encoder or build_encoder("resnet18", image_size, width_multiplier=WIDTH)
    projector = ProjectionHead(num_layers=2, output_dim=PROJ_DIM, hidden_dim=16, last_bn=True, name="projector")
    model = SimSiam(encoder, projector, predictor_head(PROJ_DIM, 16), augment=augment, num_classes=num_classes,
                    linear_probe=linear_probe, seed=seed)
    model.build_heads()
    return model


def _views(seed=0, batch=BATCH):
    return random_views(seed, batch, SIZE, NUM_CLASSES)


def _batch(seed=0, batch=BATCH):
    """The host-augmented batch dict of `_views`."""
    view1, view2, labels = _views(seed, batch)
    return host_batch(view1, view2, labels=labels)


def _cos(a, b):
    return tf.reduce_sum(a * b, axis=1) / (tf.norm(a, axis=1) * tf.norm(b, axis=1))


def _reference_gradients(model, view1, view2, stop_gradient):
    """Gradient of -cos(p1, z2)/2 - cos(p2, z1)/2 w.r.t. the non-probe trainable variables."""
    variables = model.encoder.trainable_weights + model.projector.trainable_weights + model.predictor.trainable_weights
    with tf.GradientTape() as tape:
        z1 = model.projector(model.encoder(view1, training=True), training=True)
        z2 = model.projector(model.encoder(view2, training=True), training=True)
        p1, p2 = model.predictor(z1, training=True), model.predictor(z2, training=True)
        if stop_gradient:  # constants, as numpy arrays: nothing can flow back through them
            z1, z2 = tf.constant(z1.numpy()), tf.constant(z2.numpy())
        loss = -0.5 * tf.reduce_mean(_cos(p1, z2)) - 0.5 * tf.reduce_mean(_cos(p2, z1))
    return variables, tape.gradient(loss, variables), float(loss)


def test_update_follows_the_stop_gradient_loss():
    model = _simsiam(seed=1, linear_probe=False)
    view1, view2, labels = _views(seed=2)
    weights = model.get_weights()
    variables, want_grads, want_loss = _reference_gradients(model, view1, view2, stop_gradient=True)
    model.set_weights(weights)
    _, no_stop_grads, _ = _reference_gradients(model, view1, view2, stop_gradient=False)
    model.set_weights(weights)
    before = [v.numpy() for v in variables]
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=0.0))
    logs = model.train_step(host_batch(view1, view2, labels=labels))
    np.testing.assert_allclose(float(logs["loss"]), want_loss, rtol=1e-5)
    gaps = []
    for v, w0, g, g_free in zip(variables, before, want_grads, no_stop_grads):
        got = v.numpy() - w0
        scale = np.max(np.abs(LR * g.numpy())) + 1e-12
        np.testing.assert_allclose(got, -LR * g.numpy(), rtol=1e-3, atol=1e-3 * scale, err_msg=v.path)
        gaps.append(np.max(np.abs(g.numpy() - g_free.numpy())) / (np.max(np.abs(g_free.numpy())) + 1e-12))
    # Without the stop-gradient the encoder's gradient is clearly different: the check above can fail.
    assert max(gaps) > 0.05, max(gaps)


def test_no_gradient_reaches_the_stop_gradient_side():
    rng = np.random.default_rng(3)
    p1, p2, z1, z2 = (tf.constant(rng.normal(size=(5, 4)), tf.float32) for _ in range(4))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([p1, p2, z1, z2])
        loss = SimSiam.symmetric_loss(p1, p2, z1, z2)
    assert tape.gradient(loss, z1) is None and tape.gradient(loss, z2) is None
    assert np.any(tape.gradient(loss, p1).numpy()) and np.any(tape.gradient(loss, p2).numpy())
    # Closed form: p == z everywhere gives -1; p == -z gives +1.
    np.testing.assert_allclose(float(SimSiam.symmetric_loss(z1, z2, z2, z1)), -1.0, atol=1e-6)
    np.testing.assert_allclose(float(SimSiam.symmetric_loss(-z2, -z1, z1, z2)), 1.0, atol=1e-6)


def test_step_loss_and_collapse_std_match_numpy():
    model = _simsiam(seed=4)
    view1, view2, labels = _views(seed=5)
    weights = model.get_weights()
    _, z1, p1 = model.online(view1)
    _, z2, p2 = model.online(view2)
    model.set_weights(weights)

    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    want = -0.5 * np.mean(np.sum(unit(p1) * unit(z2), 1)) - 0.5 * np.mean(np.sum(unit(p2) * unit(z1), 1))
    want_std = np.mean(np.std(unit(np.concatenate([z1, z2])), axis=0))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR))
    logs = model.train_step(host_batch(view1, view2, labels=labels))
    np.testing.assert_allclose(float(logs["loss"]), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(logs["collapse_std"]), want_std, rtol=1e-5)


def _fashion_batches(image_size, batch):
    """Endless device-path batch dicts of 64 Fashion-MNIST images: each batch's rows carry its own seed."""
    from tfssl.data import load_split

    split = load_split("fashion_mnist", "train[:64]")
    images = np.stack([x.numpy() for x, _, _ in split.dataset])
    labels = np.array([y.numpy() for _, y, _ in split.dataset])
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(batch).enumerate()

    def to_batch(index, element):
        seed = tf.tile(batch_seed(0, 0, index)[None], [tf.shape(element[1])[0], 1])
        return {"images": element[0], "seed": seed, "labels": element[1]}

    return ds.map(to_batch)


def test_short_fit_with_device_augmentation_lowers_the_loss(tiny_encoder):
    steps = 20
    augment = SimCLRAugment(12, color_jitter_strength=0.25, crop_area=(0.5, 1.0))
    keras.utils.set_random_seed(0)
    model = _simsiam(seed=0, augment=augment, image_size=12, num_classes=10, encoder=tiny_encoder(12))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    history = model.fit(_fashion_batches(12, 16), steps_per_epoch=1, epochs=steps, verbose=0)
    losses = np.array(history.history["loss"])
    assert np.all(np.isfinite(losses)) and np.all(losses >= -1.0 - 1e-5) and np.all(losses <= 1.0 + 1e-5)
    assert losses[-5:].mean() < losses[:5].mean() - 0.2, losses
    assert np.all(np.array(history.history["collapse_std"]) > 0)


def test_save_and_reload_round_trip(tmp_path):
    model = _simsiam(seed=6, augment=SimCLRAugment(SIZE, blur_prob=0.3))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=0.9))
    model.train_step(_batch(seed=7))
    path = str(tmp_path / "simsiam.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SimSiam)
    assert loaded.augment.get_config() == model.augment.get_config()
    assert loaded.projector.last_bn and not loaded.predictor.last_bn and loaded.predictor.hidden_dim == 16
    assert int(loaded.optimizer.iterations.numpy()) == 1
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _views(seed=8)[0]
    z = model.projector(model.encoder(x, training=False), training=False)
    np.testing.assert_allclose(loaded.predictor(z, training=False).numpy(), model.predictor(z, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_build_method_defaults():
    config = TrainConfig(method="simsiam", image_size=SIZE, width_multiplier=WIDTH,
                         method_options=dict(proj_layers=3, proj_dim=32, proj_hidden_dim=0, pred_hidden_dim=0,
                                             fix_predictor_lr=False))
    model = build_method(config, num_classes=10)
    assert isinstance(model, SimSiam) and model.augment is None
    # proj_hidden_dim 0 means the encoder width (64 for ResNet-18 x 1/8), pred_hidden_dim 0 proj_dim // 4.
    assert model.projector.num_layers == 3 and model.projector.last_bn and model.projector.hidden_dim == 64
    assert model.predictor.hidden_dim == 8 and model.predictor.output_dim == 32  # bottleneck proj_dim / 4
    assert not hasattr(model, "target_encoder")
    with pytest.raises(ValueError, match="output_dim"):
        SimSiam(model.encoder, model.projector, predictor_head(16, 4))


def test_fixed_predictor_rate_follows_the_peak_while_the_rest_follows_the_schedule(tmp_path):
    """Step 0 of a warm-up schedule has rate 0: encoder and projector stay put, the predictor moves by -peak * g."""
    from tfssl.optim import WarmupCosine, build_optimizer

    keras.utils.set_random_seed(3)
    encoder = build_encoder("resnet18", SIZE, width_multiplier=WIDTH)
    projector = ProjectionHead(num_layers=2, output_dim=PROJ_DIM, hidden_dim=16, last_bn=True, name="projector")
    model = SimSiam(encoder, projector, predictor_head(PROJ_DIM, 16), fix_predictor_lr=True, linear_probe=False)
    model.build_heads()
    view1, view2, labels = _views(seed=4)
    weights = model.get_weights()
    variables, grads, _ = _reference_gradients(model, view1, view2, stop_gradient=True)
    model.set_weights(weights)
    peak = 0.2
    model.compile(optimizer=build_optimizer("sgd", WarmupCosine(peak, total_steps=10, warmup_steps=2), momentum=0.9))
    model.build_optimizers()
    assert float(model.predictor_optimizer.learning_rate) == pytest.approx(peak)
    before = [v.numpy() for v in variables]
    model.train_step(host_batch(view1, view2, labels=labels))
    predictor_ids = {id(v) for v in model.predictor.trainable_variables}
    for v, w0, g in zip(variables, before, grads):
        want = -peak * g.numpy() if id(v) in predictor_ids else np.zeros_like(w0)
        scale = np.max(np.abs(peak * g.numpy())) + 1e-12
        np.testing.assert_allclose(v.numpy() - w0, want, rtol=1e-3, atol=1e-3 * scale, err_msg=v.path)
    # The predictor's optimizer (its momentum slots and step) is part of the model's checkpoint.
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    slots = [n for n in names if "predictor_optimizer" in n]
    assert len(slots) > len(model.predictor.trainable_variables), slots


def test_fixed_predictor_rate_flag_reaches_the_method():
    def options(fix):
        return dict(proj_layers=2, proj_dim=PROJ_DIM, proj_hidden_dim=0, pred_hidden_dim=0, fix_predictor_lr=fix)

    config = TrainConfig(model_dir="x", method="simsiam", image_size=SIZE, width_multiplier=WIDTH,
                         method_options=options(True))
    model = build_method(config)
    assert model.fix_predictor_lr and model.get_config()["fix_predictor_lr"]
    assert not build_method(TrainConfig(model_dir="x", method="simsiam", image_size=SIZE, width_multiplier=WIDTH,
                                        method_options=options(False))).fix_predictor_lr
