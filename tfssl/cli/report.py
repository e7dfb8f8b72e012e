"""tfssl-report: one self-contained HTML page (pictures embedded) about one or more training runs.

  tfssl-report --model_dir=runs/a                                # -> report.html
  tfssl-report --model_dir=runs/a --model_dir=runs/b --output=/tmp/compare.html
"""
from absl import flags

import tfssl.cli  # noqa: F401
from tfssl.cli._common import run_main

flags.DEFINE_multi_string("model_dir", [], "Training run directory (repeat the flag for several runs).")
flags.DEFINE_string("output", "report.html", "Where to write the HTML page.")
flags.DEFINE_string("title", "", "Page title (default: the run names).")
FLAGS = flags.FLAGS


def main(_):
    from tfssl.report.html import build_report

    path = build_report(FLAGS.model_dir, output=FLAGS.output, title=FLAGS.title or None)
    print(f"Wrote {path}")


def run():
    run_main("tfssl-report", main)


if __name__ == "__main__":
    run()
