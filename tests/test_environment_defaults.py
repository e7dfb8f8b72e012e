"""`import tfssl` sets TensorFlow's environment defaults before TensorFlow loads, and keeps the user's."""
import os
import subprocess
import sys

PROBE = ("import os, tfssl; import tensorflow as tf; "
         "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], os.environ['KERAS_BACKEND'])")


def run_probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "KERAS_BACKEND")}
    clean.update(env, TF_CPP_MIN_LOG_LEVEL="0", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", PROBE], env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split(), done.stderr


def test_onednn_on_by_default_and_tensorflow_reports_it():
    values, log = run_probe()
    assert values == ["1", "tensorflow"]
    assert "oneDNN custom operations are on" in log  # TensorFlow itself read the setting


def test_user_setting_wins():
    values, log = run_probe(TF_ENABLE_ONEDNN_OPTS="0")  # positive control: the message goes away
    assert values == ["0", "tensorflow"]
    assert "oneDNN custom operations are on" not in log
