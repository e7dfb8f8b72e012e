"""Barlow Twins and VICReg: the step's loss against float64 numpy on the model's own projector outputs,
a short run that learns, .keras round trip, build_method from a TrainConfig.

(The 2-replica == 1-device check of both methods is in test_siamese_distributed.py.)
"""
import keras
import numpy as np
import pytest

from method_data import fashion_views, random_views
from tfssl.config import TrainConfig
from tfssl.heads import ProjectionHead
from tfssl.methods import METHODS, BarlowTwins, VICReg, build_method

SIZE, BATCH, NUM_CLASSES, PROJ_DIM = 8, 8, 3, 6


def _model(method, tiny_encoder, seed=0, image_size=SIZE, num_classes=NUM_CLASSES, **weights):
    keras.utils.set_random_seed(seed)
    projector = ProjectionHead(num_layers=2, output_dim=PROJ_DIM, hidden_dim=12, last_bn=False, name="projector")
    cls = BarlowTwins if method == "barlow_twins" else VICReg
    model = cls(tiny_encoder(image_size), projector, num_classes=num_classes, seed=seed, **weights)
    model.build_heads()
    return model


def _views(seed=0, batch=BATCH):
    return random_views(seed, batch, SIZE, NUM_CLASSES, noise=0.2)


def _numpy_barlow(z1, z2, lambd):
    """Paper eq. (1)-(2): standardise each feature (biased variance, eps 1e-5), C = z1n^T z2n / N."""
    def standardize(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)

    c = standardize(z1).T @ standardize(z2) / len(z1)
    on = np.sum((1 - np.diag(c)) ** 2)
    off = np.sum(c ** 2) - np.sum(np.diag(c) ** 2)
    return on + lambd * off, {"on_diagonal": on, "off_diagonal": off}


def _numpy_vicreg(z1, z2, sim, var, cov):
    """Authors' code: MSE invariance, mean of the two std hinges (eps 1e-4), sum of the covariance terms / d."""
    def v(z):
        return np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)))

    def c(z):
        m = np.cov(z, rowvar=False)
        return (np.sum(m ** 2) - np.sum(np.diag(m) ** 2)) / z.shape[1]

    parts = {"invariance": np.mean((z1 - z2) ** 2), "variance": (v(z1) + v(z2)) / 2, "covariance": c(z1) + c(z2)}
    return sim * parts["invariance"] + var * parts["variance"] + cov * parts["covariance"], parts


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_step_loss_matches_numpy(method, tiny_encoder):
    weights = dict(lambd=0.02) if method == "barlow_twins" else dict(sim_weight=3.0, var_weight=7.0, cov_weight=2.0)
    model = _model(method, tiny_encoder, seed=1, **weights)
    data = _views(seed=2)
    start = model.get_weights()
    # The model's own projector outputs on the fixed views (training mode: BN with batch statistics).
    z1 = np.asarray(model.embed(data[0])[1], np.float64)
    z2 = np.asarray(model.embed(data[1])[1], np.float64)
    model.set_weights(start)  # undo the BN moving-statistics update of the calls above
    if method == "barlow_twins":
        want, parts = _numpy_barlow(z1, z2, 0.02)
    else:
        want, parts = _numpy_vicreg(z1, z2, 3.0, 7.0, 2.0)
    unit = z1 / np.linalg.norm(z1, axis=1, keepdims=True), z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    want_std = np.mean(np.std(np.concatenate(unit), axis=0))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01))
    logs = model.train_step(data)
    np.testing.assert_allclose(float(logs["loss"]), want, rtol=1e-4)
    for name, value in parts.items():
        np.testing.assert_allclose(float(logs[name]), value, rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(float(logs["collapse_std"]), want_std, rtol=1e-4)
    assert {"probe_loss", "probe_acc"} <= set(logs)
    # The step moved the projector and encoder (the loss has a gradient there).
    moved = [not np.array_equal(a, b) for a, b in zip(start, model.get_weights())]
    assert sum(moved) > len(moved) // 2


@pytest.mark.parametrize("method,learning_rate", [("barlow_twins", 0.01), ("vicreg", 0.002)])
def test_short_fit_lowers_the_loss(method, learning_rate, tiny_encoder):
    model = _model(method, tiny_encoder, seed=0, image_size=12, num_classes=10)
    data = fashion_views(12, 16)
    # Judged on one fixed pair of views before and after: per-step losses of fresh views are too noisy.
    view1, view2, _ = next(iter(data))

    def fixed_loss():
        return float(model.pair_loss(model.embed(view1)[1], model.embed(view2)[1])[0])

    before = fixed_loss()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9))
    history = model.fit(data, steps_per_epoch=1, epochs=30, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_save_and_reload_round_trip(method, tiny_encoder, tmp_path):
    weights = dict(lambd=0.03) if method == "barlow_twins" else dict(sim_weight=5.0, var_weight=6.0, cov_weight=0.5)
    model = _model(method, tiny_encoder, seed=3, **weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9))
    model.train_step(_views(seed=4))
    path = str(tmp_path / f"{method}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and not loaded.projector.last_bn
    for name, value in weights.items():
        assert getattr(loaded, name) == value
    assert int(loaded.optimizer.iterations.numpy()) == 1
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _views(seed=5)[0]
    np.testing.assert_allclose(loaded.projector(loaded.encoder(x)).numpy(), model.projector(model.encoder(x)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_build_method_from_config(tiny_encoder_in_build_method):
    assert METHODS["barlow_twins"] is BarlowTwins and METHODS["vicreg"] is VICReg
    common = dict(image_size=SIZE, proj_layers=3, proj_dim=10, proj_hidden_dim=20)
    barlow = build_method(TrainConfig(method="barlow_twins", bt_lambda=0.01, **common), num_classes=4)
    assert isinstance(barlow, BarlowTwins) and barlow.lambd == 0.01 and barlow.probe is not None
    assert barlow.projector.num_layers == 3 and barlow.projector.output_dim == 10 and not barlow.projector.last_bn
    vicreg = build_method(TrainConfig(method="vicreg", vicreg_var_weight=10.0, **common))
    assert isinstance(vicreg, VICReg) and (vicreg.sim_weight, vicreg.var_weight, vicreg.cov_weight) == (25, 10, 1)
    assert vicreg.projector.hidden_dim == 20 and not vicreg.projector.last_bn and vicreg.probe is None


def test_invalid_arguments_raise(tiny_encoder):
    projector = ProjectionHead(num_layers=1, output_dim=4, last_bn=False)
    with pytest.raises(ValueError, match="lambd"):
        BarlowTwins(tiny_encoder(SIZE), projector, lambd=-1.0)
    with pytest.raises(ValueError, match="var_weight"):
        VICReg(tiny_encoder(SIZE), projector, var_weight=-0.5)
    with pytest.raises(ValueError, match="bt_lambda"):
        TrainConfig(model_dir="x", method="barlow_twins", bt_lambda=-1.0).validate()
    with pytest.raises(ValueError, match="vicreg_cov_weight"):
        TrainConfig(model_dir="x", method="vicreg", vicreg_cov_weight=-1.0).validate()
