"""Shared pytest set-up: quiet TensorFlow, two logical CPU devices for distribution tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

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
