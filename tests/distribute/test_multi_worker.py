"""MultiWorkerMirroredStrategy across real processes on 127.0.0.1: 2 workers x 1 CPU device each.

Every job is bounded (the launcher's timeout, then SIGKILL; the workers also die with their launcher).
The reference is one process running the same global batch over 2 replicas (MirroredStrategy on two
logical CPUs): the same normalisation groups and the same two-half-batch gradient sum, so a correct
multi-worker run must reproduce it. Host augmentation (every worker builds the same global batch and
keeps its half) and synchronised BN for SimCLR / BYOL; MoCo v2 shuffles BN over the 2 replicas both ways.

Tolerance of the weight comparisons, after 6 steps: per variable, max |difference| <= 2e-3 x (max |value|
+ 0.1) (weights and optimizer slots). The runs add the same terms in a different order (a ring
all-reduce between processes, an in-process all-reduce across devices, in the gradients and in the
synchronised BN sums), float32 round-off of ~1e-7 relative, amplified step after step by the BN
parameters, whose gradients are sums of nearly cancelling terms: measured worst 7e-4 of that scale
(SimCLR, stem BN gamma momentum). Logged losses are global-batch means and agree to 1e-5. The control
(2 replicas with per-replica BN) is more than 10x outside the tolerance. Against 1 device (no
replicas) the losses agree to 1e-3 after 6 steps; its BN-parameter momenta drift by ~1e-2 (the same
cancellation, with a single-batch sum), so weights are compared with the 2-replica run.

These weight comparisons run on TensorFlow's default CPU kernels (TF_ENABLE_ONEDNN_OPTS=0; tfssl otherwise
turns oneDNN on): oneDNN picks its convolution kernels, and so their summation order, by thread count and
batch, which differ between two one-CPU workers and one process with two replicas; with oneDNN the same 6
steps differed by 1.0e-2 of the scale, close to the control, so the comparison could not tell a
distribution bug from kernel round-off. What is tested here is the distribution (sharding, all-reduce,
synchronised BN); the launcher's kill / resume tests below run with oneDNN on.
"""
import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tfssl.cli.launch import Job, free_ports

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = [sys.executable, os.path.join(HERE, "worker.py")]
COMMON = ["--train_split=train[:512]", "--batch_size=32", "--image_size=16", "--encoder=resnet18",
          "--width_multiplier=0.125", "--log_every=1", "--seed=1", "--learning_rate=0.5"]
METHOD_ARGS = {
    "simclr": ["--method=simclr", "--sync_bn=true", "--simclr_temperature=0.5"],
    "moco_v2": ["--method=moco_v2", "--moco_v2_queue_size=64", "--moco_v2_momentum=0.9", "--moco_v2_temperature=0.5"],
    "byol": ["--method=byol", "--sync_bn=true", "--byol_proj_dim=128", "--byol_proj_hidden_dim=64",
             "--byol_pred_hidden_dim=32"],
}
SCALED_TOLERANCE = 2e-3
DEFAULT_KERNELS = {"TF_ENABLE_ONEDNN_OPTS": "0"}  # see the module docstring
JOB_TIMEOUT = 240


class Lines:
    """Collects the prefixed output of a job (thread-safe enough for appends)."""

    def __init__(self):
        self.lines, self.lock = [], threading.Lock()

    def write(self, text):
        with self.lock:
            self.lines.append(text)

    def flush(self):
        pass

    def text(self):
        with self.lock:
            return "".join(self.lines)


def _run_job(commands, envs=None, timeout=JOB_TIMEOUT, while_running=None):
    """Runs one worker per command on free local ports; returns (exit code, output)."""
    out = Lines()
    job = Job(commands, [f"127.0.0.1:{port}" for port in free_ports("127.0.0.1", len(commands))],
              grace=20.0, out=out, envs=envs)
    if while_running is not None:
        threading.Thread(target=while_running, args=(job, out), daemon=True).start()
    code = job.wait(timeout=timeout)
    return code, out.text()


def _single(args, dump, replicas=1, timeout=JOB_TIMEOUT):
    """One process, no TF_CONFIG; `replicas` = 2: MirroredStrategy over two logical CPUs."""
    env = dict(os.environ, TFSSL_TEST_DUMP=str(dump), TFSSL_TEST_LOGICAL_CPUS=str(replicas), **DEFAULT_KERNELS)
    env.pop("TF_CONFIG", None)
    strategy = ["--strategy=mirrored"] if replicas > 1 else []
    done = subprocess.run([*WORKER, *args, *strategy], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _dumped(path):
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _worst_scaled_difference(got, want):
    assert sorted(got) == sorted(want)
    return max(float(np.max(np.abs(got[n] - want[n])) / (np.max(np.abs(want[n])) + 0.1)) for n in want)


def _assert_same_variables(got, want, what):
    worst = _worst_scaled_difference(got, want)
    assert worst <= SCALED_TOLERANCE, f"{what}: worst scaled difference {worst:.3g}"


def _assert_workers_identical(dumps, per_replica_bn=False):
    """Every variable bitwise equal on both workers; with per-replica BN (MoCo v1/v2) the BN moving statistics are
    each worker's own running means of its own batches (as PyTorch DDP with broadcast_buffers=False), so those
    must differ instead (the chief's are the checkpointed ones, compared with the 1-process run separately)."""
    for name, value in dumps[1].items():
        if per_replica_bn and name.endswith(("moving_mean", "moving_variance")):
            assert not np.array_equal(value, dumps[0][name]), f"{name}: per-replica BN statistics cannot be equal"
            continue
        np.testing.assert_array_equal(value, dumps[0][name], err_msg=name)


def _metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def simclr_runs(tmp_path_factory):
    """SimCLR, 6 steps: 2 workers (worker 1 with its own, empty --model_dir and TMPDIR), 1 process with 2
    replicas, 1 process with 1 device, and the control (1 process, 2 replicas, per-replica BN)."""
    root = tmp_path_factory.mktemp("simclr")
    args = [*COMMON, *METHOD_ARGS["simclr"], "--train_steps=6", "--checkpoint_every=3"]
    (root / "tmp1").mkdir()
    commands = [[*WORKER, *args, f"--model_dir={root / 'chief'}", "--strategy=multi_worker"],
                [*WORKER, *args, f"--model_dir={root / 'worker1'}", "--strategy=multi_worker"]]
    envs = [{"TFSSL_TEST_DUMP": str(root / "w0.npz"), **DEFAULT_KERNELS},
            {"TFSSL_TEST_DUMP": str(root / "w1.npz"), "TMPDIR": str(root / "tmp1"), **DEFAULT_KERNELS}]
    code, output = _run_job(commands, envs)
    assert code == 0, output[-4000:]
    _single([*args, f"--model_dir={root / 'mirrored'}"], root / "mirrored.npz", replicas=2)
    _single([*args, f"--model_dir={root / 'single'}"], root / "single.npz")
    control = [a for a in args if a != "--sync_bn=true"] + ["--sync_bn=false"]
    _single([*control, f"--model_dir={root / 'control'}"], root / "control.npz", replicas=2)
    return root, output


def test_two_workers_match_one_process_simclr(simclr_runs):
    root, _ = simclr_runs
    workers = [_dumped(root / "w0.npz"), _dumped(root / "w1.npz")]
    _assert_same_variables(workers[0], _dumped(root / "mirrored.npz"), "chief vs 1 process x 2 replicas")
    _assert_workers_identical(workers)  # bitwise: the same all-reduced update of the same weights
    for got, want in zip(_metrics(root / "chief"), _metrics(root / "mirrored"), strict=True):
        for name in ("loss", "contrast_acc", "probe_loss"):
            np.testing.assert_allclose(float(got[name]), float(want[name]), rtol=1e-5, err_msg=got["step"])
    for got, want in zip(_metrics(root / "chief"), _metrics(root / "single"), strict=True):
        np.testing.assert_allclose(float(got["loss"]), float(want["loss"]), rtol=1e-3, err_msg=got["step"])


def test_per_replica_bn_control_is_far_outside_the_tolerance(simclr_runs):
    """Positive control: the comparison above can fail (per-replica BN statistics change the steps)."""
    root, _ = simclr_runs
    worst = _worst_scaled_difference(_dumped(root / "control.npz"), _dumped(root / "mirrored.npz"))
    assert worst > 10 * SCALED_TOLERANCE, worst


def test_non_chief_writes_nothing_outside_its_cleaned_temporary_directory(simclr_runs):
    root, output = simclr_runs
    assert sorted(os.listdir(root / "chief")) == ["checkpoints", "flags.json", "metrics.csv", "pictures",
                                                  "tensorboard", "timing.json"]
    assert not (root / "worker1").exists()  # never created, let alone written
    assert os.listdir(root / "tmp1") == []  # its checkpoint copies were written there, then removed
    assert "[w1] Done: step 6 (worker 1 of 2" in output


@pytest.mark.slow
@pytest.mark.parametrize("method", ["moco_v2", "byol"])
def test_two_workers_match_one_process(method, tmp_path):
    args = [*COMMON, *METHOD_ARGS[method], "--train_steps=6", "--checkpoint_every=3"]
    code, output = _run_job([[*WORKER, *args, f"--model_dir={tmp_path / 'mw'}", "--strategy=multi_worker"]] * 2,
                            [{"TFSSL_TEST_DUMP": str(tmp_path / f"w{i}.npz"), **DEFAULT_KERNELS} for i in range(2)])
    assert code == 0, output[-4000:]
    _single([*args, f"--model_dir={tmp_path / 'mirrored'}"], tmp_path / "mirrored.npz", replicas=2)
    workers = [_dumped(tmp_path / "w0.npz"), _dumped(tmp_path / "w1.npz")]
    _assert_same_variables(workers[0], _dumped(tmp_path / "mirrored.npz"), f"{method}: chief vs 1 process")
    _assert_workers_identical(workers, per_replica_bn=method == "moco_v2")
    for got, want in zip(_metrics(tmp_path / "mw"), _metrics(tmp_path / "mirrored"), strict=True):
        np.testing.assert_allclose(float(got["loss"]), float(want["loss"]), rtol=1e-5, err_msg=got["step"])


def _launch(model_dir, steps, while_running=None, timeout=JOB_TIMEOUT):
    """The real `tfssl-launch --workers=2` command; returns (exit code, output)."""
    command = [sys.executable, "-m", "tfssl.cli.launch", "--workers=2", f"--timeout={timeout}", "--grace=20", "--",
               *COMMON, *METHOD_ARGS["simclr"], f"--train_steps={steps}", "--checkpoint_every=4",
               f"--model_dir={model_dir}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Lines()
    reader = threading.Thread(target=lambda: [out.write(line) for line in process.stdout], daemon=True)
    reader.start()
    if while_running is not None:
        threading.Thread(target=while_running, args=(process, out), daemon=True).start()
    try:
        code = process.wait(timeout=timeout + 60)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    return code, out.text()


def _worker_pids(launcher_pid):
    """PIDs of the launcher's child processes (worker 0 first: started first)."""
    pids = []
    for task in os.listdir(f"/proc/{launcher_pid}/task"):
        with open(f"/proc/{launcher_pid}/task/{task}/children") as f:
            pids += [int(p) for p in f.read().split()]
    return sorted(pids)


def _when_step_logged(model_dir, step, action):
    """A `while_running` callback: waits until the chief logged `step`, then `action(worker_pids)`."""

    def watch(process, out):
        path = os.path.join(model_dir, "metrics.csv")
        deadline = time.time() + JOB_TIMEOUT
        while time.time() < deadline and process.poll() is None:
            if os.path.exists(path) and any(int(r["step"]) >= step for r in _metrics(model_dir)):
                action(_worker_pids(process.pid))
                return
            time.sleep(0.05)

    return watch


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 2-worker run of 14 steps with the real launcher: the reference of the resume tests."""
    model_dir = tmp_path_factory.mktemp("straight") / "run"
    code, output = _launch(model_dir, 14)
    assert code == 0, output[-4000:]
    return {int(r["step"]): r for r in _metrics(model_dir)}


def _assert_resumed_losses_match(model_dir, want, first_step):
    got = {int(r["step"]): r for r in _metrics(model_dir)}
    assert sorted(got) == list(range(1, 15))
    for step in range(first_step, 15):
        for name in ("loss", "probe_loss", "contrast_acc"):
            np.testing.assert_allclose(float(got[step][name]), float(want[step][name]), rtol=1e-4, atol=1e-6,
                                       err_msg=f"step {step} {name}")


@pytest.mark.slow
def test_sigkill_of_one_worker_then_restart_resumes_from_the_chiefs_checkpoint(uninterrupted, tmp_path):
    model_dir = tmp_path / "run"
    kill_worker1 = _when_step_logged(model_dir, 6, lambda pids: os.kill(pids[1], signal.SIGKILL))
    code, output = _launch(model_dir, 14, while_running=kill_worker1)
    assert code == 128 + signal.SIGKILL, output[-4000:]  # the launcher reports the killed worker, stops w0
    assert "a worker exited with 137" in output
    code, output = _launch(model_dir, 14)
    assert code == 0, output[-4000:]
    resumed = int(re.search(r"\[w0\] Resuming from .*ckpt-(\d+) at step (\d+)/14", output).group(2))
    assert resumed in (4, 8, 12), output  # a periodic checkpoint: at most one interval (4 steps) lost
    _assert_resumed_losses_match(model_dir, uninterrupted, resumed + 1)


@pytest.mark.slow
def test_sigterm_on_one_worker_saves_the_same_step_on_every_worker(uninterrupted, tmp_path):
    model_dir = tmp_path / "run"
    term_worker1 = _when_step_logged(model_dir, 5, lambda pids: os.kill(pids[1], signal.SIGTERM))
    code, output = _launch(model_dir, 14, while_running=term_worker1)
    assert code == 128 + signal.SIGTERM, output[-4000:]
    stopped = dict(re.findall(r"\[w(\d)\] Stopped by SIGTERM at step (\d+)", output))
    assert sorted(stopped) == ["0", "1"] and len(set(stopped.values())) == 1, output  # one step, both saved it
    step = int(stopped["0"])
    assert os.path.exists(model_dir / "checkpoints" / f"ckpt-{step}.index")  # written by the chief, not periodic
    code, output = _launch(model_dir, 14)
    assert code == 0, output[-4000:]
    assert f"at step {step}/14" in output
    _assert_resumed_losses_match(model_dir, uninterrupted, step + 1)
