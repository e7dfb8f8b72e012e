"""tfssl-finetune: user mistakes give one line on stderr and exit code 2 (no traceback)."""
import os
import subprocess
import sys

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bad_flag_is_a_one_line_error_with_exit_code_2(tmp_path):
    # One process (mostly TensorFlow's import time); the other argument errors are the same kind of
    # ValueError and are checked in-process by the other test modules.
    proc = subprocess.run([sys.executable, "-m", "tfssl.cli.finetune", "--random_init", "--label_fraction=0",
                           f"--output_dir={tmp_path}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert lines == ["tfssl-finetune: error: --label_fraction must be in (0, 1] (e.g. 0.01, 0.1 or 1.0), got 0.0"]
    assert not os.listdir(tmp_path), "nothing is written before the arguments are checked"
