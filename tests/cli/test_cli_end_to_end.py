"""The command-line tools end to end on a small real Fashion-MNIST subset.

train -> SIGKILL -> resume (must reproduce an uninterrupted run step for step) -> eval -> export ->
reload the SavedModel and compare with the checkpointed encoder; bad flags give one line and exit 2.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

FAST_FLAGS = [
    "--dataset=fashion_mnist", "--train_split=train[:384]", "--val_split=validation[:192]",
    "--test_split=test[:192]", "--image_size=16", "--encoder=resnet18", "--width_multiplier=0.125",
    "--batch_size=32", "--optimizer=lars", "--learning_rate=0.5", "--warmup_epochs=0.5",
    "--simclr_temperature=0.5", "--simclr_proj_dim=16", "--color_jitter_strength=0.5", "--log_every=1",
    "--checkpoint_every=4", "--seed=7",
]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


def tool(name, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", f"tfssl.cli.{name}", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def losses(model_dir):
    with open(os.path.join(model_dir, "metrics.csv")) as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("ref") / "run")
    result = tool("train", *FAST_FLAGS, "--train_steps=24", f"--model_dir={model_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_train_writes_logs_and_flags(reference_run):
    with open(os.path.join(reference_run, "flags.json")) as f:
        saved = json.load(f)
    assert saved["train_steps"] == 24 and saved["width_multiplier"] == 0.125
    assert saved["method"] == "simclr" and "temperature" not in saved
    assert saved["method_options"]["temperature"] == 0.5 and saved["method_options"]["proj_dim"] == 16
    assert sorted(losses(reference_run)) == list(range(1, 25))
    assert os.listdir(os.path.join(reference_run, "tensorboard"))
    checkpoints = os.listdir(os.path.join(reference_run, "checkpoints"))
    assert any(name.startswith("ckpt-24") for name in checkpoints)


def test_kill_and_resume_reproduces_uninterrupted_run(reference_run, tmp_path):
    model_dir = str(tmp_path / "run")
    command = [sys.executable, "-m", "tfssl.cli.train", *FAST_FLAGS, "--train_steps=24", f"--model_dir={model_dir}"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint_dir = os.path.join(model_dir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(checkpoint_dir, "checkpoint")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no chance to save anything more: only checkpoints survive
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    logged_before = max(losses(model_dir))
    assert logged_before < 24

    resumed = tool("train", *FAST_FLAGS, "--train_steps=24", f"--model_dir={model_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stdout
    reference, after = losses(reference_run), losses(model_dir)
    assert sorted(after) == list(range(1, 25)), "every step logged exactly once"
    # Same weights, optimizer state, data order and augmentation seeds: the same losses, step for step.
    np.testing.assert_allclose([after[s] for s in range(1, 25)], [reference[s] for s in range(1, 25)],
                               rtol=2e-4, atol=2e-4)


def test_eval_export_and_reload(reference_run, tmp_path):
    result = tool("eval", f"--model_dir={reference_run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "random init" in result.stdout and "raw pixels" in result.stdout
    with open(os.path.join(reference_run, "eval", "result.json")) as f:
        report = json.load(f)
    for name in ("encoder", "random_init", "raw_pixels"):
        assert 0.1 < report[name]["linear"]["test_accuracy"] <= 1.0
        assert 0.1 < report[name]["knn"]["test_accuracy"] <= 1.0
        assert report[name]["num_examples"] == {"train": 384, "val": 192, "test": 192}
    assert report["encoder"]["knn"]["k"] == 200
    cached = [f for f in os.listdir(os.path.join(reference_run, "eval")) if f.endswith(".npz")]
    assert len(cached) == 9  # 3 splits x (trained, random init, raw pixels): extracted once, kept
    with open(os.path.join(reference_run, "flags.json")) as f:
        size = json.load(f)["image_size"]
    assert report["raw_pixels"]["feature_dim"] == size * size * 3  # Fashion-MNIST's gray as RGB, flattened

    export_dir = str(tmp_path / "export")
    result = tool("export", f"--model_dir={reference_run}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]

    import tensorflow as tf

    from tfssl.augment import center_resize
    from tfssl.data import load_split
    from tfssl.training import restore_model

    loaded = tf.saved_model.load(export_dir)
    serve = loaded.signatures["serving_default"]
    images = np.stack([x for x, _, _ in load_split("fashion_mnist", "test[:8]").dataset.as_numpy_iterator()])
    served = serve(images=tf.constant(images, tf.float32))["embedding"].numpy()
    model, _, _ = restore_model(reference_run)
    expected = model.encoder(center_resize(images, 16), training=False).numpy()
    assert served.shape == (8, 64)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)

    # The export evaluates like the checkpoint: same splits, same features (up to float noise).
    from_export = tool("eval", f"--encoder={export_dir}", "--train_split=train[:384]",
                       "--val_split=validation[:192]", "--test_split=test[:192]")
    assert from_export.returncode == 0, from_export.stderr[-3000:]
    assert not os.path.exists(os.path.join(export_dir, "eval"))
    with open(export_dir + "_eval/result.json") as f:
        export_report = json.load(f)
    assert export_report["encoder"]["num_examples"] == report["encoder"]["num_examples"]
    for protocol in ("linear", "knn"):
        assert abs(export_report["encoder"][protocol]["test_accuracy"]
                   - report["encoder"][protocol]["test_accuracy"]) <= 0.011

    again = tool("export", f"--model_dir={reference_run}", f"--export_dir={export_dir}")
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize("flag, message", [
    ("--method=nope", "unknown method 'nope'; choose one of amdim, barlow_twins, byol, cmc, cpc_v2, dino, instdis, "
                      "invaspread, moco_v1, moco_v2, moco_v3, simclr, simsiam, swav, vicreg, yadim"),
    # Each case starts a Python with TensorFlow (~10-20 s); three run by default, the others with -m slow.
    pytest.param("--simclr_temperature=0", "--simclr_temperature must be > 0, got 0.0", marks=pytest.mark.slow),
    # The flat method flags before per-method options name the flag they became.
    ("--temperature=0.5", "--temperature is now an option of each method: use --simclr_temperature"),
    pytest.param("--moco_queue_size=64", "--moco_queue_size is now an option of each method and --method=simclr "
                 "has none; it became --moco_v1_queue_size, --moco_v2_queue_size", marks=pytest.mark.slow),
    pytest.param("--batch_size=-4", "--batch_size must be > 0", marks=pytest.mark.slow),
    ("--dataset=not_a_dataset_xyz", "fashion_mnist"),
])
def test_bad_flags_one_line_error(flag, message, tmp_path):
    result = tool("train", *FAST_FLAGS, "--train_steps=2", f"--model_dir={tmp_path}", flag)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_batch_not_divisible_by_replicas():
    from tfssl.config import TrainConfig

    with pytest.raises(ValueError, match="not divisible by the 2 replicas"):
        TrainConfig(model_dir="x", batch_size=33).validate(num_replicas=2)


@pytest.mark.parametrize("strategy, replicas, refused", [
    ("mirrored", 2, True), ("multi_worker", 2, True), ("multi_worker", 1, False), ("tpu", 8, False),
])
def test_jit_compile_with_several_replicas(strategy, replicas, refused):
    """XLA on one replica's step cannot hold the collectives of a Mirrored / MultiWorker step: refused."""
    from tfssl.config import TrainConfig

    config = TrainConfig(model_dir="x", batch_size=64, jit_compile=True, strategy=strategy)
    if refused:
        with pytest.raises(ValueError, match=f"--jit_compile cannot run with the {replicas} replicas"):
            config.validate(num_replicas=replicas)
    else:
        config.validate(num_replicas=replicas)
