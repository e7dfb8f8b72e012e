"""tfssl: contrastive self-supervised learning of image representations in TensorFlow / Keras 3."""
import os as _os

# Keras 3 picks its backend at import time; tfssl is written for the TensorFlow backend.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"


def __getattr__(name):
    # `tfssl.load_encoder` without making `import tfssl` load TensorFlow (CLIs quiet its logs first).
    if name == "load_encoder":
        from tfssl.finetune import load_encoder

        return load_encoder
    raise AttributeError(f"module 'tfssl' has no attribute {name!r}")
