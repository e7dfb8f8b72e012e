"""Fixtures for the optim tests."""
import pytest
import tensorflow as tf


@pytest.fixture
def two_cpu_strategy():
    """MirroredStrategy over the two logical CPUs of tests/conftest.py.

    ReductionToOneDevice instead of the default collective all-reduce: every MirroredStrategy in a
    process starts its collective group / instance keys at the same values, so two strategies that
    all-reduce different tensor shapes collide ("Shape mismatch in the collective instance ...").
    The optimizer only sees `replica_context.all_reduce`, so the reduction method does not matter here.
    """
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs the two logical CPUs configured in tests/conftest.py")
    return tf.distribute.MirroredStrategy(
        [d.name for d in devices[:2]], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
