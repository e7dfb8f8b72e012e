"""tfssl-launch: K local tfssl-train workers under MultiWorkerMirroredStrategy, on this machine.

  tfssl-launch --workers=2 -- --flagfile=flags/simclr_fashion_mnist.flags --model_dir=runs/a

Everything after `--` goes to every worker's `tfssl-train` (with `--strategy=multi_worker` added). Each
worker gets a TF_CONFIG naming the K local addresses (free ports on --host) and its own index; worker 0
is the chief and the only one that writes --model_dir. Output lines are prefixed with `[w<i>]`.

When one worker fails the others are stopped (a collective step cannot go on without it) and the
launcher exits with the failed worker's code; re-running the same command resumes from the chief's newest
checkpoint. SIGTERM or Ctrl-C on the launcher is passed on as SIGTERM: every worker saves the same step,
then all exit (143). A cluster of machines (Kubernetes pods, VMs) needs no launcher: see README, Scaling.
"""
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

flags.DEFINE_integer("workers", 2, "Number of worker processes.")
flags.DEFINE_string("host", "127.0.0.1", "Address the workers listen on (one machine).")
flags.DEFINE_list("ports", [], "Worker ports (default: free ports picked at start).")
flags.DEFINE_float("timeout", 0.0, "Stop every worker after this many seconds (0 = no limit); exit 124.")
flags.DEFINE_float("grace", 10.0, "Seconds a worker gets to exit after SIGTERM before it is killed.")
flags.DEFINE_integer("threads_per_worker", 0, "Intra-op (and OpenMP) threads of each worker: 0 = this machine's "
                     "cores / --workers (at least 1), so K workers do not oversubscribe the cores; -1 = "
                     "TensorFlow's default (every core per worker). TF_NUM_INTRAOP_THREADS / OMP_NUM_THREADS "
                     "already in the environment win.")
FLAGS = flags.FLAGS

PROG = "tfssl-launch"
_PR_SET_PDEATHSIG = 1


def free_ports(host, count):
    """`count` distinct ports nobody listens on now (the OS picks them)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses, index):
    """The TF_CONFIG of worker `index` in a cluster of `addresses` (no separate chief: worker 0 is it)."""
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


def thread_env(threads_per_worker, workers, cpus=None):
    """Environment that caps each worker's thread pools (see --threads_per_worker); {} to leave them."""
    if threads_per_worker == -1:
        return {}
    if threads_per_worker < -1:
        raise ValueError(f"--threads_per_worker must be >= 1, 0 (auto) or -1 (TensorFlow's default), "
                         f"got {threads_per_worker}")
    threads = threads_per_worker or max(1, (cpus or os.cpu_count() or 1) // workers)
    return {name: os.environ.get(name, str(threads)) for name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS")}


def worker_command(train_args):
    """The tfssl-train command line of one worker; refuses a --strategy other than multi_worker."""
    for arg in train_args:
        if arg.startswith("--strategy=") and arg != "--strategy=multi_worker":
            raise ValueError(f"{arg} conflicts with {PROG}, whose workers run --strategy=multi_worker; drop it")
        if arg == "--strategy":
            raise ValueError("write --strategy=multi_worker (or nothing) after --, not --strategy VALUE")
    return [sys.executable, "-m", "tfssl.cli.train", *train_args, "--strategy=multi_worker"]


def _die_with_parent():
    # In the child, before exec: its own session (a terminal's Ctrl-C reaches only the launcher, which
    # forwards it as SIGTERM), and SIGKILL when the launcher dies, so no worker outlives it.
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _pump(stream, prefix, out):
    for line in iter(stream.readline, b""):
        out.write(prefix + line.decode(errors="replace"))
        out.flush()
    stream.close()


class Job:
    """K worker processes, worker i running `commands[i]` with the TF_CONFIG of `addresses` and index i.

    Args:
      commands: one argv list per worker.
      addresses: "host:port" of each worker.
      grace: seconds a worker gets to exit by itself after SIGTERM or after another worker failed.
      out: where the `[w<i>]`-prefixed output lines go (anything with write and flush).
      envs: optional extra environment variables per worker.

    `wait()` returns the job's exit code.
    """

    def __init__(self, commands, addresses, grace=10.0, out=sys.stdout, envs=None):
        if len(commands) != len(addresses):
            raise ValueError(f"{len(commands)} commands for {len(addresses)} worker addresses")
        self.grace = grace
        self.processes, self.pumps = [], []
        for index, command in enumerate(commands):
            env = dict(os.environ, TF_CONFIG=tf_config(addresses, index), PYTHONUNBUFFERED="1",
                       **(envs[index] if envs else {}))
            process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent)
            pump = threading.Thread(target=_pump, args=(process.stdout, f"[w{index}] ", out), daemon=True)
            pump.start()
            self.processes.append(process)
            self.pumps.append(pump)

    def terminate(self):
        """SIGTERM to every live worker (each saves the same step, then exits); SIGKILL after the grace."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.time() + self.grace
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait(self, timeout=0.0):
        start = time.time()
        while True:
            codes = [process.poll() for process in self.processes]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:
                # A pre-empted worker (143) exits while the others save the same step: give them the grace
                # period. A crashed one leaves the others blocked in a collective: killed after it.
                deadline = time.time() + self.grace
                while time.time() < deadline and any(process.poll() is None for process in self.processes):
                    time.sleep(0.2)
                for process in self.processes:
                    if process.poll() is None:
                        process.kill()
                self._join()
                return failed[0] if failed[0] > 0 else 128 - failed[0]
            if all(code == 0 for code in codes):
                self._join()
                return 0
            if timeout and time.time() - start > timeout:
                self.terminate()
                self._join()
                return 124
            time.sleep(0.2)

    def _join(self):
        for process in self.processes:
            process.wait()
        for pump in self.pumps:
            pump.join(timeout=5)


def main(argv):
    train_args = argv[1:]
    if FLAGS.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {FLAGS.workers}")
    if not train_args:
        raise ValueError("no tfssl-train arguments: put them after --, e.g. -- --flagfile=flags/x.flags")
    ports = [int(p) for p in FLAGS.ports] if FLAGS.ports else free_ports(FLAGS.host, FLAGS.workers)
    if len(ports) != FLAGS.workers:
        raise ValueError(f"--ports lists {len(ports)} ports for --workers={FLAGS.workers}")
    addresses = [f"{FLAGS.host}:{port}" for port in ports]
    command = worker_command(train_args)
    print(f"{PROG}: {FLAGS.workers} workers at {', '.join(addresses)} (chief: w0)", flush=True)
    threads = thread_env(FLAGS.threads_per_worker, FLAGS.workers)
    if threads:
        print(f"{PROG}: {threads['TF_NUM_INTRAOP_THREADS']} intra-op threads per worker", flush=True)
    job = Job([command] * FLAGS.workers, addresses, grace=FLAGS.grace, envs=[threads] * FLAGS.workers)

    def forward(*_):
        print(f"{PROG}: stopping: SIGTERM to every worker (each saves a checkpoint)", flush=True)
        job.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = job.wait(timeout=FLAGS.timeout)
    if code == 124:
        print(f"{PROG}: --timeout={FLAGS.timeout:g} s reached; workers stopped", file=sys.stderr)
    elif code:
        print(f"{PROG}: a worker exited with {code}; the others were stopped", file=sys.stderr)
    sys.exit(code)


def run():
    def guarded(argv):
        try:
            main(argv)
        except ValueError as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)


if __name__ == "__main__":
    run()
