"""Every method's run directory exports its encoder like SimCLR's: restore_model (what tfssl-export uses)
rebuilds the method from flags.json and the checkpoint -- key / target encoders, queue, memory bank and
all -- and the SavedModel serves exactly the checkpointed encoder's embeddings."""
import os

import numpy as np
import pytest
from slowness import default_run
import tensorflow as tf

from tfssl.config import TrainConfig
from tfssl.methods import METHODS, build_method
from tfssl.training import CHECKPOINT_DIR, FLAGS_FILE, restore_model

SIZE = 16
HEADS = dict(proj_layers=2, proj_dim=8, proj_hidden_dim=16)
# Small heads, a 32-key MoCo queue, 8 InstDis negatives (the bank: 40 rows); the rest as in the papers.
OPTIONS = {
    "cpc_v2": dict(grid=3, steps="1,2", patch_encoder="resnet18", patch_width=0.0625, patch_cifar_stem=True,
                   context_blocks=1, context_hidden=8, target_dim=4),
    "moco_v1": dict(proj_dim=8, queue_size=32, temperature=0.5),
    "moco_v2": dict(HEADS, queue_size=32, temperature=0.5),
    "moco_v3": dict(HEADS, pred_hidden_dim=0, temperature=0.5, tau_base=0.996),
    "byol": dict(HEADS, pred_hidden_dim=0),
    "simsiam": dict(HEADS, pred_hidden_dim=0, fix_predictor_lr=False),
    "instdis": dict(proj_dim=8, negatives=8, temperature=0.5),
    "cmc": dict(views="luminance_gradient", proj_dim=8, negatives=8, temperature=0.5),
    "barlow_twins": dict(HEADS),
    "vicreg": dict(HEADS),
    "swav": dict(proj_hidden_dim=16, proj_dim=8, prototypes=10),
    "dino": dict(out_dim=16, hidden_dim=16, bottleneck_dim=8),
    "amdim": dict(preset="tiny"),
    "yadim": dict(preset="tiny"),
}


def _perturb(weights, seed):
    """Moves every encoder weight (BN statistics included) off its initial value."""
    rng = np.random.default_rng(seed)
    for w in weights:
        value = w.numpy()
        w.assign((value + 0.1 * rng.normal(size=value.shape) * (np.abs(value).mean() + 0.1)).astype(value.dtype))
        if "variance" in w.path:
            w.assign(np.abs(w.numpy()) + 0.5)


# Default run: one method per kind of representation (online encoder with a bank; EMA teacher); -m slow: all.
@pytest.mark.parametrize("method", default_run(sorted(set(METHODS) - {"simclr"}), ("instdis", "dino")))
def test_method_run_exports_its_encoder(method, tmp_path):
    from tfssl.augment import center_resize
    from tfssl.export import export_encoder

    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    config = TrainConfig(model_dir=model_dir, method=method, image_size=SIZE, width_multiplier=0.125,
                         linear_probe=False, method_options=OPTIONS.get(method, {}))
    with open(os.path.join(model_dir, FLAGS_FILE), "w") as f:
        f.write(config.to_json())
    trained = build_method(config, total_steps=10, num_examples=40)
    _perturb(trained.encoder.weights, 0)
    tf.train.Checkpoint(model=trained).save(os.path.join(model_dir, CHECKPOINT_DIR, "ckpt"))

    model, _, _ = restore_model(model_dir)
    assert type(model) is type(trained)
    for a, b in zip(trained.encoder.weights, model.encoder.weights):
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=a.path)
    # What tfssl-export serves: the representation (the encoder, or e.g. CPC's patchify + encoder + pool).
    version_dir = export_encoder(model.representation(), str(tmp_path / "serving"), SIZE, warmup=False)
    images = np.random.default_rng(1).integers(0, 256, size=(3, 28, 28, 1)).astype(np.uint8)  # raw pixels
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images, tf.float32))
    want = trained.representation()(center_resize(tf.constant(images), SIZE), training=False).numpy()
    np.testing.assert_allclose(served["embedding"].numpy(), want, rtol=1e-5, atol=1e-5)
