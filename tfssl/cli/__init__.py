"""Command-line entry points (absl apps). Thin: parse flags, call library code, report errors."""
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def quietly(function):
    """Runs `function` with fd 2 captured: TF's C++ start-up notices (CUDA probing, oneDNN, CPU flags) hidden.

    TF 2.21 writes them to fd 2 before its log-level settings apply, and on a CPU machine they are noise.
    What was written is replayed if `function` fails with anything but a one-line user error (ValueError,
    FileNotFoundError), so no error is lost. Set TFSSL_DEBUG=1 to see everything.

    Args:
      function: no-argument callable.

    Returns:
      What `function` returns.
    """
    if os.environ.get("TFSSL_DEBUG"):
        return function()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            return function()
        except (ValueError, FileNotFoundError):
            raise  # our one-line user errors: the captured notices would only bury them
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _import_tensorflow():
    import tensorflow as tf

    # Probing the physical devices prints the CUDA notices but leaves TensorFlow's context alone: a
    # logical-device query here would fix the context before a CLI can create a MultiWorkerMirroredStrategy,
    # which must configure collective ops first (`run_main`'s start-up does that, then the devices).
    tf.config.list_physical_devices()


if "tensorflow" not in sys.modules:
    quietly(_import_tensorflow)
