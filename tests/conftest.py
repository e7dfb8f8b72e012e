"""Shared pytest set-up: quiet TensorFlow, two logical CPU devices for distribution tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfssl  # noqa: E402,F401  (the library's environment defaults before TensorFlow loads, as for users)
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so MirroredStrategy tests can run on one physical CPU.
# This must happen before TensorFlow initialises its devices, hence at import time.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:
    pass  # devices already initialised by an earlier import; tests needing 2 devices check for it

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def two_replica_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Strategies using collective all-reduce in one process start their collective keys at the same
    values and collide, so every distributed test shares this one instance.
    """
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "two logical CPU devices are needed (see the top of tests/conftest.py)"
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])

