"""Shared CLI plumbing: user mistakes become one line on stderr and exit code 2."""
import os
import sys

from absl import app, flags, logging

USER_ERRORS = (ValueError, FileNotFoundError)


def run_main(prog, main, startup=None):
    """Runs absl `main`; a `USER_ERRORS` exception prints `prog: error: message` and exits 2.

    Set TFSSL_DEBUG=1 to get the full traceback instead.

    Args:
      prog: program name for error lines.
      main: absl main function.
      startup: called (quietly) after flag parsing and before `main`: what must come before anything else
        touches TensorFlow's context, i.e. creating the distribution strategy. Default: device set-up.
    """

    def guarded(argv):
        if len(argv) > 1:
            print(f"{prog}: error: unexpected arguments {argv[1:]}; every option is a --flag", file=sys.stderr)
            sys.exit(2)
        if not flags.FLAGS["verbosity"].present:
            # Library INFO lines (checkpoint sharding etc.) are noise here; --verbosity=0 brings them back.
            logging.set_verbosity(logging.WARNING)
        try:
            from tfssl.cli import quietly

            quietly(startup or initialise_devices)
            main(argv)
        except USER_ERRORS as error:
            # Our argument checks say what is wrong in one line; a multi-line message comes from deep
            # inside TensorFlow and is a bug, whose traceback is worth more than a tidy exit.
            if os.environ.get("TFSSL_DEBUG") or "\n" in str(error).strip():
                raise
            print(f"{prog}: error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as stop:
            # 143 = 128 + SIGTERM: a pre-empted worker saved its checkpoint; 130 = 128 + SIGINT.
            sys.exit(143 if type(stop).__name__ == "Preempted" else 130)

    app.run(guarded)


def initialise_devices():
    import tensorflow as tf

    tf.config.list_logical_devices()  # device initialisation prints the CUDA notices

