"""Pre-train + evaluate jobs on a pinned commit, shared by regression.py, reproduce.py, sweep.py, ablation.py.

A job is one run of that commit's own benchmarks/accuracy.py on a flagfile (a recipe plus override lines,
later lines winning), in a run directory of its own, writing one JSON. Jobs whose JSON exists are skipped,
so every command built on them resumes where it stopped. Commits are checked out once as detached git
worktrees, so editing this checkout while jobs run changes nothing they run.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True, text=True).stdout.strip()


def worktree(commit, work_dir):
    """A detached worktree of `commit` under `work_dir` (made once); returns (short sha, path)."""
    sha = git("rev-parse", "--short", commit)
    path = os.path.abspath(os.path.join(work_dir, f"code-{sha}"))
    if not os.path.isdir(path):
        git("worktree", "add", "--detach", "-f", path, sha)
    return sha, path


def run_accuracy_job(code, name, recipe, overrides, results_dir, work_dir, epochs=0, supervised_epochs=0,
                     tag="job"):
    """Runs `recipe` (a flagfile path inside `code`) with `overrides` ({flag: value}) as job `name`.

    Returns the path of the job's JSON (benchmarks/accuracy.py's output), skipping the run if it exists.
    Exits with a one-line message naming the job's log when the run fails.
    """
    output = os.path.abspath(os.path.join(results_dir, name + ".json"))
    if os.path.exists(output):
        return output
    if not os.path.exists(recipe):
        sys.exit(f"{tag}: {recipe} does not exist at {os.path.basename(code)}")
    run_dir = os.path.abspath(os.path.join(work_dir, name))
    os.makedirs(run_dir, exist_ok=True)
    flagfile = os.path.join(run_dir, "recipe.flags")
    with open(recipe) as src, open(flagfile, "w") as dst:
        dst.write(src.read().rstrip("\n") + "\n" + "".join(f"--{k}={v}\n" for k, v in overrides.items()))
    command = [sys.executable, os.path.join(code, "benchmarks", "accuracy.py"), f"--flagfile_path={flagfile}",
               f"--out_dir={os.path.join(run_dir, 'run')}", f"--supervised_epochs={supervised_epochs}",
               f"--output={output}", f"--epochs={epochs}"]
    print(f"[{tag}] {name}: {' '.join(command)}", flush=True)
    env = dict(os.environ, PYTHONPATH=code, TF_CPP_MIN_LOG_LEVEL="2")
    with open(os.path.join(run_dir, "log.txt"), "a") as log:
        result = subprocess.run(command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        sys.exit(f"{tag}: {name} failed (exit {result.returncode}); see {run_dir}/log.txt")
    return output


def figures(path):
    """A job's headline figures (percent / minutes): linear and kNN test, linear val, pre-training time."""
    with open(path) as f:
        data = json.load(f)
    ours = data[data["method"]]
    return {"linear": 100 * ours["linear"]["test_accuracy"], "knn": 100 * ours["knn"]["test_accuracy"],
            "val_linear": 100 * ours["linear"]["val_accuracy"], "val_knn": 100 * ours["knn"]["val_accuracy"],
            "minutes": data["pretrain_seconds"] / 60}
