"""tfssl: contrastive self-supervised learning of image representations in TensorFlow / Keras 3."""
import os as _os

# Keras 3 picks its backend at import time; tfssl is written for the TensorFlow backend.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow turns its oneDNN CPU kernels on by itself only on CPUs with AVX-512 VNNI / BF16 or AMX; elsewhere
# (e.g. AVX2 CPUs) convolutions and their gradients run on slower default kernels: a SimCLR step of the
# Fashion-MNIST recipe took 2.6x as long (benchmarks/profile_step.py, README "Speed"). On unless the user
# set TF_ENABLE_ONEDNN_OPTS; TensorFlow reads it once, when it loads, so this must precede its import.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"


def __getattr__(name):
    # `tfssl.load_encoder` without making `import tfssl` load TensorFlow (CLIs quiet its logs first).
    if name == "load_encoder":
        from tfssl.finetune import load_encoder

        return load_encoder
    raise AttributeError(f"module 'tfssl' has no attribute {name!r}")
