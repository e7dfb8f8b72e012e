"""Command-line entry points (absl apps). Thin: parse flags, call library code, report errors."""
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _import_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up notices (CUDA probing, oneDNN, CPU flags) hidden.

    TF 2.21 writes them to fd 2 before its log-level settings apply, and on a CPU machine they are
    noise. What was written is replayed if the import or device set-up fails, so no error is lost.
    Set TFSSL_DEBUG=1 to see everything.
    """
    if os.environ.get("TFSSL_DEBUG") or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()  # device initialisation prints the CUDA notices
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_import_tensorflow_quietly()
