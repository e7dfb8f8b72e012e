"""tfssl-export on a (stand-in) training run: TF Serving layout, heads, --describe, one-line errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export_helpers import randomise_batch_norm, sample_images

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
TOL = dict(rtol=1e-5, atol=1e-5)


def tool(*args):
    return subprocess.run([sys.executable, "-m", "tfssl.cli.export", *args], capture_output=True, text=True,
                          env=ENV, timeout=300)


def one_line_error(result, message):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr[-2000:]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A SimCLRv2-style run directory as tfssl-train leaves it (flags.json + a checkpoint), untrained."""
    from tfssl.config import TrainConfig
    from tfssl.methods import build_method
    from tfssl.training import CHECKPOINT_DIR, FLAGS_FILE

    model_dir = str(tmp_path_factory.mktemp("run"))
    config = TrainConfig(model_dir=model_dir, image_size=16, width_multiplier=0.125, linear_probe=False,
                         method_options={"proj_layers": 3, "keep_proj_layer": 1, "proj_dim": 8, "temperature": 0.5})
    with open(os.path.join(model_dir, FLAGS_FILE), "w") as f:
        f.write(config.to_json())
    model = build_method(config)
    randomise_batch_norm(model.encoder, 5)
    tf.train.Checkpoint(model=model).save(os.path.join(model_dir, CHECKPOINT_DIR, "ckpt"))
    return model_dir


def test_export_cli_from_a_run(run_dir, tmp_path):
    """--export_base layout, outputs equal to the restored run's, heads only when truly checkpointed."""
    from tfssl.augment import center_resize
    from tfssl.encoders import endpoint_model
    from tfssl.export import check_head_restored
    from tfssl.training import restore_model

    model, _, checkpoint = restore_model(run_dir)
    try:
        check_head_restored(model, model.projector, checkpoint, "projector", "--projection")
        heads_saved = True
    except ValueError:
        heads_saved = False
    base = str(tmp_path / "serving")
    args = [f"--model_dir={run_dir}", f"--export_base={base}", "--model_name=fmnist"]
    result = tool(*args, "--projection", "--endpoints=block3,kept_head")
    if not heads_saved:
        # The projection head is not in the checkpoint: exporting it would serve random weights.
        one_line_error(result, "would be random")
        assert not os.path.exists(os.path.join(base, "fmnist", "1"))
        result = tool(*args, "--endpoints=block3")
    assert result.returncode == 0, result.stderr[-3000:]
    version_dir = os.path.join(base, "fmnist", "1")
    assert f"to {version_dir}" in result.stdout and "signature_def['serve_image_bytes']" in result.stdout

    images = sample_images(50, (3, 28, 28, 1))
    served = tf.saved_model.load(version_dir).signatures["serving_default"](images=tf.constant(images, tf.float32))
    x = center_resize(tf.constant(images), 16)
    h = model.encoder(x, training=False)
    np.testing.assert_allclose(served["embedding"].numpy(), h.numpy(), **TOL)
    np.testing.assert_allclose(served["block3"].numpy(),
                               endpoint_model(model.encoder, "block3")(x, training=False)["block3"].numpy(), **TOL)
    if heads_saved:
        np.testing.assert_allclose(served["projection"].numpy(), model.projector(h, training=False).numpy(), **TOL)
        np.testing.assert_allclose(served["kept_head"].numpy(), model.fine_tune_model()(x, training=False).numpy(),
                                   **TOL)

    described = tool(f"--describe={os.path.join(base, 'fmnist')}")
    assert described.returncode == 0, described.stderr[-3000:]
    assert described.stdout.startswith(f"tfssl export: {version_dir}")
    assert "checkpoint: " in described.stdout and "output block3: float32 (-1, 4, 4, 32)" in described.stdout
    for name in ("serving_default", "serve_uint8", "serve_image_bytes", "serve_model_input"):
        assert f"signature_def['{name}']:" in described.stdout



def test_heads_not_in_the_checkpoint_are_detected(tiny_model, run_dir, tmp_path):
    """Heads whose weights a checkpoint lacks are refused: they would be exported freshly initialised."""
    from tfssl.export import check_head_restored, head_is_checkpointed
    from tfssl.export.checks import checkpoint_variable_count
    from tfssl.training import restore_model

    encoder, head = tiny_model
    assert head_is_checkpointed(encoder, encoder.layers[2]) and encoder.layers[2].variables
    assert not head_is_checkpointed(encoder, head)  # a separate layer: not part of the encoder's checkpoint
    with pytest.raises(ValueError, match="does not save its projector"):
        check_head_restored(encoder, head, None, "projector", "--projection")

    model, _, path = restore_model(run_dir)
    assert checkpoint_variable_count(path, ("model", "encoder")) == len(model.encoder.variables)
    check_head_restored(model, model.projector, path, "projector", "--projection")  # the run's own: fine
    holder = tf.Module()  # a checkpoint written without the projector (as older tfssl versions did)
    holder.encoder = model.encoder
    old = tf.train.Checkpoint(model=holder).save(str(tmp_path / "old" / "ckpt"))
    assert checkpoint_variable_count(old, ("model", "projector")) == 0
    with pytest.raises(ValueError, match=f"holds 0 of the {len(model.projector.variables)} projector"):
        check_head_restored(model, model.projector, old, "projector", "--projection")
