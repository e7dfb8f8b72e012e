"""Pre-training loop: strategy, data, model, optimizer, checkpoints, logs, resume.

`pretrain(config)` is everything `tfssl-train` does; the CLI only parses flags. The loop is our own
(not `model.fit`) so that a run can resume mid-epoch at the exact step it was checkpointed at; the
model is still a plain `keras.Model` whose `train_step` also works with `fit`.
"""
import csv
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time

import keras
import tensorflow as tf
from absl import logging

from tfssl import distribute
from tfssl.config import TrainConfig
from tfssl.data.pipeline import pretrain_dataset
from tfssl.methods import build_augment, build_method
from tfssl.optim import WarmupCosine, build_optimizer, scale_learning_rate

FLAGS_FILE = "flags.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
TIMING_FILE = "timing.json"


def write_text_atomic(path, text):
    """Writes a file via a temporary file and rename, so readers never see half of it."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_run_config(model_dir):
    """The `TrainConfig` saved beside a run (raises FileNotFoundError with a hint if absent)."""
    path = os.path.join(model_dir, FLAGS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {model_dir!r} a tfssl-train --model_dir?")
    with open(path) as f:
        return TrainConfig.from_json(f.read())


def _check_resume_compatible(config):
    path = os.path.join(config.model_dir, FLAGS_FILE)
    if not os.path.exists(path) or tf.train.latest_checkpoint(os.path.join(config.model_dir, CHECKPOINT_DIR)) is None:
        return
    saved = load_run_config(config.model_dir)
    for name in TrainConfig.ARCHITECTURE_FIELDS:
        if getattr(saved, name) != getattr(config, name):
            raise ValueError(f"--{name}={getattr(config, name)!r} differs from the checkpointed run's "
                             f"{getattr(saved, name)!r} in {config.model_dir}; use a new --model_dir")
    ours, theirs = config.options(), saved.options()
    for name in type(ours).ARCHITECTURE:
        if getattr(ours, name) != getattr(theirs, name):
            raise ValueError(f"{ours.flag(name)}={getattr(ours, name)!r} differs from the checkpointed run's "
                             f"{getattr(theirs, name)!r} in {config.model_dir}; use a new --model_dir")


def cpu_has_bfloat16():
    """True when this x86 CPU has bfloat16 instructions (AVX512_BF16 or AMX); None when it cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def set_precision_policy(name):
    keras.mixed_precision.set_global_policy("float32" if name == "none" else name)
    if name == "mixed_bfloat16" and not tf.config.list_logical_devices("GPU") and \
            not tf.config.list_logical_devices("TPU") and cpu_has_bfloat16() is False:
        # Measured on a 2-core AVX2 EPYC: the SimSiam Fashion-MNIST step ~10x slower than in float32.
        logging.warning("--mixed_precision=mixed_bfloat16 on a CPU without bfloat16 instructions (no "
                        "AVX512_BF16 / AMX): bfloat16 is emulated and much slower than float32 here; "
                        "use --mixed_precision=none")


def build_training(config, strategy, num_classes, steps_per_epoch, total_steps, num_examples=None):
    """Model, LR schedule and optimizer for `config`, created under `strategy`'s scope."""
    lr = scale_learning_rate(config.learning_rate, config.batch_size, config.lr_scaling)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if warmup >= total_steps > 1:
        print(f"warning: the learning-rate warm-up ({warmup} steps = --warmup_epochs={config.warmup_epochs:g}) covers "
              f"the whole run ({total_steps} steps), so the cosine decay never starts; lower --warmup_epochs "
              f"(e.g. {0.1 * total_steps / steps_per_epoch:.2g} for 10% of the run)", flush=True)
    schedule = WarmupCosine(lr, total_steps=total_steps, warmup_steps=min(warmup, total_steps))
    with strategy.scope():
        model = build_method(config, num_classes=num_classes, total_steps=total_steps, num_examples=num_examples,
                             steps_per_epoch=steps_per_epoch)
        optimizer = build_optimizer(config.optimizer, schedule, weight_decay=config.weight_decay,
                                    momentum=config.momentum, weight_decay_mode=config.weight_decay_mode,
                                    weight_decay_exclude=config.weight_decay_exclude)
        # Under mixed_float16, compile() wraps the optimizer in a LossScaleOptimizer (auto_scale_loss).
        model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
        model.build_optimizers()
    return model, schedule


class _MetricsLog:
    """metrics.csv (one row per logged step) and TensorBoard scalars, consistent across resumes."""

    def __init__(self, model_dir, names, resumed_step):
        self.path = os.path.join(model_dir, METRICS_FILE)
        self.columns = ["step", "epoch", "learning_rate", *names, "elapsed_s"]
        rows = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                # Steps after the restored checkpoint will be trained again: drop their old rows.
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard"))

    def write(self, step, epoch, values):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(
                {"step": step, "epoch": epoch, **{k: f"{v:.6g}" for k, v in values.items()}})
        with self.writer.as_default(step=step):
            for name, value in values.items():
                if name != "elapsed_s":
                    tf.summary.scalar(f"train/{name}", value)
        self.writer.flush()


class _Timing:
    """timing.json: training wall time and peak memory summed / maxed over every run segment (resumes).

    Written next to each checkpoint; the seconds a killed segment spent after its last checkpoint are
    retrained (and counted) by the resumed one.
    """

    def __init__(self, model_dir, resumed_step):
        self.path = os.path.join(model_dir, TIMING_FILE)
        self.start = time.time()
        self.before = {"seconds": 0.0, "segments": 0, "peak_rss_mib": 0.0, "step": 0}
        if os.path.exists(self.path) and resumed_step:
            with open(self.path) as f:
                self.before.update(json.load(f))

    def write(self, step):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux
        record = {"seconds": round(self.before["seconds"] + time.time() - self.start, 1),
                  "segments": self.before["segments"] + 1,
                  "peak_rss_mib": round(max(self.before["peak_rss_mib"], peak), 1), "step": step}
        write_text_atomic(self.path, json.dumps(record, indent=2))


STOP_KEY = "workers_stopping"


class Preempted(KeyboardInterrupt):
    """Raised on every worker at the step after any worker received SIGTERM (its checkpoint is saved)."""


def _make_step_function(model, strategy, jit_compile, stop_flag=None):
    """`run_one(iterator)`: one distributed train step; returns the replica-mean of each metric.

    With `stop_flag` (a local float `tf.Variable`, 1 once this process was asked to stop) the outputs also
    hold `STOP_KEY`: the flag summed over every replica of every worker, carried by the all-reduce the
    metrics make anyway, so all workers learn of one worker's SIGTERM at the same step.
    """
    step = tf.function(model.train_step, jit_compile=True) if jit_compile else model.train_step

    def replica_step(batch):
        outputs = step(batch)
        if stop_flag is not None:
            outputs[STOP_KEY] = tf.identity(stop_flag)
        return outputs

    @tf.function
    def run_one(iterator):
        outputs = strategy.run(replica_step, args=(next(iterator),))
        return {k: strategy.reduce("SUM" if k == STOP_KEY else "MEAN", v, axis=None) for k, v in outputs.items()}

    return run_one


def _same_on_every_worker(strategy, value):
    """True when the integer `value` is the same in every worker process (one all-gather)."""
    if distribute.worker_role(strategy)[1] == 1:
        return True

    @tf.function
    def gather():
        local = tf.constant([value], tf.int64)
        return strategy.gather(strategy.run(lambda: tf.identity(local)), axis=0)

    values = gather().numpy()
    return bool((values == values[0]).all())


def pretrain(config, verbose=1):
    """Pre-trains `config.method` and returns its final metrics.

    Re-running with the same `model_dir` resumes from the newest checkpoint: weights, optimizer slots,
    step, epoch and position within the epoch (the data order is a function of seed and epoch).

    Args:
      config: `TrainConfig`.
      verbose: 1 = progress bar per epoch (a log line every `log_every` steps when not a terminal),
        0 = silent.

    Returns:
      dict with `step`, `epoch`, `model_dir`, `checkpoint` (in the chief's run directory), `worker` (this
      process' index; 0 = the chief), `num_workers` and the last logged metric values.
    """
    strategy = distribute.build_strategy(config.strategy, config.tpu_address)
    config.validate(num_replicas=strategy.num_replicas_in_sync)
    _check_resume_compatible(config)
    worker, num_workers, chief = distribute.worker_role(strategy)
    # Only the chief writes the run directory; every other worker writes its (collective) checkpoint saves
    # and logs to a private temporary directory, removed at the end (TensorFlow's multi-worker guide), so a
    # shared --model_dir never sees two writers.
    work_dir = config.model_dir if chief else tempfile.mkdtemp(prefix=f"tfssl_worker{worker}_")
    verbose = verbose if chief else 0
    os.makedirs(work_dir, exist_ok=True)
    try:
        return {**_pretrain(config, strategy, work_dir, verbose), "worker": worker, "num_workers": num_workers}
    finally:
        if not chief:
            shutil.rmtree(work_dir, ignore_errors=True)


def _pretrain(config, strategy, work_dir, verbose):
    """`pretrain`'s loop; writes checkpoints, logs and timing to `work_dir` (the run directory on the chief)."""
    keras.utils.set_random_seed(config.seed)
    set_precision_policy(config.mixed_precision)

    split = config.load_split(config.train_split)
    steps_per_epoch = split.num_examples // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"--batch_size={config.batch_size} is larger than the {split.num_examples} examples "
                         f"of {config.dataset}:{config.train_split}")
    total_steps = config.train_steps or config.epochs * steps_per_epoch
    num_epochs = math.ceil(total_steps / steps_per_epoch)

    model, schedule = build_training(config, strategy, split.num_classes, steps_per_epoch, total_steps,
                                     num_examples=split.num_examples)
    # Metric trackers hold the epoch's running means: checkpointing them makes a resumed epoch log
    # exactly what an uninterrupted one would.
    metric_state = [v for metric in model.metrics for v in metric.variables]
    checkpoint = tf.train.Checkpoint(**checkpointed_objects(model, metric_state))
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(work_dir, CHECKPOINT_DIR),
                                         max_to_keep=config.keep_checkpoints)
    # Every worker resumes from the chief's newest checkpoint.
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, CHECKPOINT_DIR))
    if latest:
        _restore(model, metric_state, latest)
    step = int(model.optimizer.iterations.numpy())
    if not _same_on_every_worker(strategy, step):
        raise ValueError(f"the workers restored different steps (this one: {step}) from "
                         f"{config.model_dir}/{CHECKPOINT_DIR}: --model_dir must be one directory every worker "
                         f"sees (a shared file system or a gs:// bucket)")
    if verbose and step:
        print(f"Resuming from {latest} at step {step}/{total_steps}")
    write_text_atomic(os.path.join(work_dir, FLAGS_FILE), config.to_json())

    host_augment = build_augment(config) if config.augment_on == "host" else None
    stop_flag = tf.Variable(0.0, trainable=False, name="stop_requested")  # local: outside strategy.scope()
    run_one = _make_step_function(model, strategy, config.jit_compile, stop_flag=stop_flag)
    names = [m.name for m in model.metrics]
    monitor = None
    if config.knn_monitor_every and work_dir == config.model_dir:  # the chief's kNN monitor (see its module)
        from tfssl.evaluation.monitor import KNNMonitor

        monitor = KNNMonitor(config)
    log = _MetricsLog(work_dir, names + (["knn_acc"] if config.knn_monitor_every else []), step)
    interactive = sys.stdout.isatty()
    values, start = {}, time.time()

    timing = _Timing(work_dir, step)

    def save(reason):
        path = manager.save(checkpoint_number=step)
        timing.write(step)
        logging.info("checkpoint %s (%s)", path, reason)
        return path

    def on_sigterm(*_):
        # A scheduler's SIGTERM (pre-emption) on any one worker: every worker finishes the step in flight,
        # learns of it through that step's all-reduce (STOP_KEY), and all save the same step, then exit.
        # A second SIGTERM does not wait for the step: it interrupts this process at once (and saves).
        if stop_flag.numpy():
            raise KeyboardInterrupt
        stop_flag.assign(1.0)

    previous_sigterm = signal.getsignal(signal.SIGTERM)
    if previous_sigterm in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for epoch in range(step // steps_per_epoch, num_epochs):
            done_in_epoch = step - epoch * steps_per_epoch
            steps_this_epoch = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            if done_in_epoch == 0:
                for metric in model.metrics:
                    metric.reset_state()
            ds = pretrain_dataset(split, config.batch_size, epoch=epoch, seed=config.seed,
                                  augment=host_augment, skip_batches=done_in_epoch, with_index=model.needs_index)
            iterator = iter(strategy.experimental_distribute_dataset(ds))
            if verbose:
                print(f"Epoch {epoch + 1}/{num_epochs}")
                bar = keras.utils.Progbar(steps_this_epoch, stateful_metrics=names + ["learning_rate"],
                                          verbose=1 if interactive else 2)
            for index in range(done_in_epoch, steps_this_epoch):
                lr = float(schedule(step))
                outputs = run_one(iterator)
                step += 1
                stopping = float(outputs.pop(STOP_KEY))
                values = {k: float(v) for k, v in outputs.items()}
                values["learning_rate"] = lr
                if verbose:
                    bar.update(index + 1, list(values.items()))
                if monitor is not None and (step % config.knn_monitor_every == 0 or step == total_steps):
                    values["knn_acc"] = monitor(model)
                if step % config.log_every == 0 or step == total_steps or "knn_acc" in values:
                    log.write(step, epoch, {**values, "elapsed_s": time.time() - start})
                    if verbose and not interactive:
                        print(f"  step {step}/{total_steps} " +
                              " ".join(f"{k}={v:.4g}" for k, v in values.items()), flush=True)
                if stopping:
                    raise Preempted
                if step % config.checkpoint_every == 0:
                    save("periodic")
            save("end of epoch")
    except KeyboardInterrupt as stop:
        path = save("pre-empted" if isinstance(stop, Preempted) else "interrupted")
        what = "Stopped by SIGTERM" if isinstance(stop, Preempted) else "Interrupted"
        print(f"\n{what} at step {step}; saved {path}. Re-run the same command to resume.", flush=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    if work_dir == config.model_dir:  # the chief draws the run's pictures (a failed plot is only a warning)
        from tfssl.report.plots import write_run_pictures

        write_run_pictures(config, split, work_dir)
    # The chief saved the same step under the same name in the run directory.
    saved = os.path.join(config.model_dir, CHECKPOINT_DIR, os.path.basename(manager.latest_checkpoint))
    return {"step": step, "epoch": num_epochs, "model_dir": config.model_dir, "checkpoint": saved, **values}


def _restore(model, metric_state, path):
    """Restores weights, optimizer slots and step (all required) and the metric means (optional) from `path`."""
    # Metric means are optional: checkpoints from before they were saved resume with the epoch's running
    # means restarted.
    names = {name for name, _ in tf.train.list_variables(path)}
    _check_head_norm_layers(model, path)
    status = tf.train.Checkpoint(model=model, optimizer=model.optimizer).restore(path)
    if _head_layers_checkpointed(model, names):
        status.assert_existing_objects_matched().expect_partial()  # metric state: restored below
    else:
        # Checkpoints from before heads saved their own layers hold the head's trainable weights (via
        # the optimizer) but not its batch-norm moving statistics, which only inference mode uses.
        status.assert_nontrivial_match().expect_partial()
        logging.warning("%s predates checkpointed head layers: projection-head BN moving statistics "
                        "restart from their initial values", path)
    if any(name.startswith("metric_state/") for name in names):
        tf.train.Checkpoint(metric_state=metric_state).restore(path).assert_existing_objects_matched().expect_partial()
    else:
        logging.warning("%s has no metric state: this epoch's running means restart from zero", path)


def _head_layers_checkpointed(model, checkpoint_names):
    """False for a checkpoint written before `ProjectionHead` exposed its layers to tf.train.Checkpoint.

    Only a head with non-trainable weights (BN moving statistics) can tell: the trainable weights of a
    BN-free head (MoCo's, InstDis's) are saved through the optimizer whichever way it was written.
    """
    heads = [name for name in ("projector", "predictor")
             if getattr(model, name, None) is not None and getattr(model, name).non_trainable_weights]
    return all(any(key.startswith(f"model/{name}/block") for key in checkpoint_names) for name in heads)


def _check_head_norm_layers(model, path):
    """Refuses to resume a checkpoint whose head BN layers hold other parameters than this model's.

    A restore skips checkpoint values the model has no variable for, so a run written when SimSiam's and
    MoCo v3's last BN still had a learnable scale would resume silently without it. The checkpoint's object
    graph is read directly: `tf.train.list_variables` names a trainable weight by one of its paths only
    (often the optimizer's), not by its layer.
    """
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))

    def children(node, *names):
        for name in names:
            node = next((c.node_id for c in graph.nodes[node].children if c.local_name == name), None)
            if node is None:
                return set()
        return {c.local_name for c in graph.nodes[node].children}

    for head_name in ("projector", "predictor"):
        for i, block in enumerate(getattr(getattr(model, head_name, None), "blocks", ())):
            for layer in block:
                if not isinstance(layer, keras.layers.BatchNormalization):
                    continue
                saved = children(0, "model", head_name, f"block{i}_{layer.name}")
                built = {weight.name for weight in layer.weights}
                if saved and saved != built:
                    raise ValueError(f"{path} holds {head_name}/{layer.name} parameters {sorted(saved)}, this tfssl "
                                     f"builds {sorted(built)} (SimSiam / MoCo v3 heads end with a scale-free BN "
                                     f"since the reference-code fix): evaluate or export that run, but resume "
                                     f"training in a new --model_dir")


def checkpointed_objects(model, metric_state):
    """What a training checkpoint holds: weights, optimizer slots and step, metric running means."""
    return {"model": model, "optimizer": model.optimizer, "metric_state": metric_state}


def restore_model(model_dir, checkpoint=None):
    """Rebuilds a run's model from its flags.json and restores its newest (or the given) checkpoint.

    Returns:
      `(model, config, checkpoint_path)`; the model is built on the default strategy, float32.
    """
    config = load_run_config(model_dir)
    path = checkpoint or tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(model_dir, CHECKPOINT_DIR)}: train first")
    keras.mixed_precision.set_global_policy("float32")
    # Only what evaluation and export need: no probe, weights of every other part restored.
    model = build_method(config, num_classes=None)
    tf.train.Checkpoint(model=model).restore(path).expect_partial()
    return model, config, path
