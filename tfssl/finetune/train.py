"""Semi-supervised fine-tuning: a labelled fraction, a linear classifier on the (partly frozen) encoder.

Protocol (SimCLR, Chen et al. 2020a sec. 6 / SimCLRv2, Chen et al. 2020b sec. 2.2): fine-tune the whole
network (optionally from a middle projection-head layer, optionally with the first blocks frozen) with
cross-entropy on a class-balanced subset of the labels, light augmentation (random crop + flip), a
cosine learning-rate decay. The epoch is selected on the validation split (carved from train, never
the test split) and the test split is scored once, for that epoch only.
"""
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tfssl.augment import SimCLRAugment, center_resize
from tfssl.finetune.loading import (
    CLASSIFIER_FILE,
    CLASSIFIER_LAYER,
    clone_with_fresh_weights,
    freeze_up_to,
    input_size,
    load_encoder,
    source_kind,
)
from tfssl.finetune.subsets import class_balanced_subset, split_labels, subset_dataset

RESULT_FILE = "result.json"


# ---- model ------------------------------------------------------------------------------------
def build_classifier(features, num_classes, zero_init=False):
    """Features model + linear classifier, as one functional model (what `tfssl-finetune` saves).

    Args:
      features: keras.Model, images `[B, S, S, 3]` in [0, 1] -> `[B, D]`.
      num_classes: C.
      zero_init: zero kernel and bias (SimCLRv2's fine-tuning head): the first step then changes only
        the classifier, so the pre-trained features are not hit by gradients of a random head.

    Returns:
      keras.Model named "tfssl_classifier": images -> logits `[B, C]` float32; its last layer is
      the Dense named "classifier".
    """
    if int(num_classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    init = "zeros" if zero_init else "glorot_uniform"
    logits = keras.layers.Dense(int(num_classes), kernel_initializer=init, bias_initializer="zeros",
                                dtype="float32", name=CLASSIFIER_LAYER)(features.output)
    return keras.Model(features.input, logits, name="tfssl_classifier")


def resolve_features(config, default_image_size=None):
    """The feature extractor a config asks for, and a description of where it came from.

    Args:
      config: `FineTuneConfig`.
      default_image_size: input side for `--random_init` without `--encoder` when --image_size is 0
        (e.g. the teacher's); 32 if None.

    Returns:
      `(features keras.Model, source dict)`.
    """
    head_layers = None if config.head_layers == -1 else config.head_layers
    source = {"encoder": config.encoder or None, "random_init": bool(config.random_init)}
    if config.encoder:
        source["kind"] = source_kind(config.encoder)
        features = load_encoder(config.encoder, trainable=True, head_layers=head_layers,
                                checkpoint=config.checkpoint or None)
        if config.random_init:
            # The honest baseline: the very same architecture (head layers included), new weights.
            features = clone_with_fresh_weights(features, config.seed + 1)
        if config.image_size and config.image_size != input_size(features):
            raise ValueError(f"--image_size={config.image_size} differs from the encoder's input size "
                             f"{input_size(features)}; leave --image_size=0")
    else:
        from tfssl.encoders import build_encoder

        if head_layers:
            raise ValueError("--head_layers needs an --encoder with a projection head")
        size = config.image_size or default_image_size or 32
        keras.utils.set_random_seed(config.seed + 1)
        features = build_encoder(config.encoder_name, image_size=size, channels=3,
                                 width_multiplier=config.width_multiplier, patch_size=config.patch_size)
        source.update(kind="random", encoder_name=config.encoder_name, width_multiplier=config.width_multiplier)
        if config.encoder_name.startswith("vit"):
            source["patch_size"] = config.patch_size
    source.update(image_size=input_size(features), feature_dim=int(features.output.shape[-1]))
    return features, source


# ---- data -------------------------------------------------------------------------------------
def light_augment(image_size, crop_min_area=0.5):
    """Random resized crop (area in [crop_min_area, 1]) + horizontal flip; no colour distortion."""
    return SimCLRAugment(image_size, color_jitter_strength=0.0, blur=False, crop_area=(crop_min_area, 1.0),
                         flip=True, jitter_prob=0.0, grayscale_prob=0.0)


def train_batches(dataset, num_examples, batch_size, image_size, augment, seed, epoch, with_labels=True):
    """One epoch of shuffled, augmented training batches.

    The order and the augmentation are functions of (seed, epoch, batch), so runs are reproducible.
    The last partial batch is dropped (a batch of one would make batch-norm statistics degenerate);
    a subset smaller than `batch_size` is one full-subset batch.

    Args:
      dataset: unbatched `(image uint8, label, index)` tf.data.
      num_examples: its size.
      batch_size: requested batch size.
      image_size: output side S.
      augment: `SimCLRAugment` or None (centre resize only).
      seed, epoch: seeds of order and augmentation.
      with_labels: yield `(images, labels)`, else images only.

    Returns:
      tf.data.Dataset of float32 `[B, S, S, 3]` images in [0, 1] (with int labels `[B]`).
    """
    batch = min(batch_size, num_examples)
    base = int(seed) * 1_000_003 + int(epoch)
    # A known size lets fit show a complete progress bar and end the epoch without a warning.
    ds = dataset.apply(tf.data.experimental.assert_cardinality(num_examples))
    ds = ds.shuffle(max(1, min(num_examples, 100_000)), seed=base, reshuffle_each_iteration=False)
    ds = ds.batch(batch, drop_remainder=True).enumerate()

    def prepare(step, element):
        images, labels, _ = element
        if augment is not None:
            images = augment(images, tf.stack([tf.constant(base, tf.int64), step]))
        else:
            images = center_resize(images, image_size)
        return (images, labels) if with_labels else images

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_batches(split, image_size, batch_size):
    """Deterministic `(images float32 [B, S, S, 3], labels)` batches of a split (centre resize)."""
    ds = split.dataset.batch(batch_size).map(lambda x, y, i: (center_resize(x, image_size), y),
                                             num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


class Predictor:
    """Inference-mode logits of a classifier over `(images, labels)` batches.

    Uses Keras' own predict function (traced once per model, reused every epoch and for the test).
    """

    def __init__(self, model):
        self.model = model

    def logits(self, dataset):
        """`(logits float32 np [N, C], labels int64 np [N])`."""
        out, labels = [], []
        for images, y in dataset:
            out.append(np.asarray(self.model.predict_on_batch(images)))
            labels.append(y.numpy())
        return np.concatenate(out).astype(np.float32), np.concatenate(labels).astype(np.int64)

    def accuracy(self, dataset):
        logits, labels = self.logits(dataset)
        return float(np.mean(np.argmax(logits, axis=1) == labels))


# ---- loop -------------------------------------------------------------------------------------
def make_optimizer(config, steps_per_epoch):
    """`config.optimizer` with warm-up + cosine decay over the whole run."""
    from tfssl.optim import WarmupCosine, build_optimizer

    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total, int(round(config.warmup_epochs * steps_per_epoch)))
    schedule = WarmupCosine(config.learning_rate, total_steps=total, warmup_steps=warmup)
    return build_optimizer(config.optimizer, schedule, weight_decay=config.weight_decay, momentum=config.momentum)


def fit_select(fit_model, scored_model, make_train_data, val_data, epochs, verbose=1):
    """Trains epoch by epoch and keeps the weights of the epoch with the best validation accuracy.

    Args:
      fit_model: compiled model whose `fit` runs one epoch (the classifier, or a distillation wrapper).
      scored_model: the classifier whose validation accuracy selects the epoch and whose weights are
        restored to the selected epoch's at the end.
      make_train_data: `epoch -> tf.data.Dataset` for `fit_model.fit`.
      val_data: `(images, labels)` batches of the validation split.
      epochs: number of epochs.
      verbose: 0 silent, 1 progress bar (one line per epoch when not on a terminal).

    Returns:
      `(history list of per-epoch dicts, selected epoch (1-based), best validation accuracy)`.
    """
    predictor = Predictor(scored_model)
    fit_verbose = 0 if not verbose else (1 if sys.stdout.isatty() else 2)
    history, best = [], (-1.0, 0, None)
    for epoch in range(epochs):
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}", flush=True)
        logs = fit_model.fit(make_train_data(epoch), epochs=1, shuffle=False, verbose=fit_verbose).history
        val_accuracy = predictor.accuracy(val_data)
        row = {"epoch": epoch + 1, **{k: float(v[-1]) for k, v in logs.items()}, "val_accuracy": val_accuracy}
        history.append(row)
        if verbose:
            print("  " + " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"), flush=True)
        if val_accuracy > best[0]:
            # Every weight, BN moving statistics included: the selected epoch is restored exactly.
            best = (val_accuracy, epoch + 1, [w.numpy() for w in scored_model.weights])
    for variable, value in zip(scored_model.weights, best[2]):
        variable.assign(value)
    return history, best[1], best[0]


def save_classifier(model, output_dir):
    """Writes `<output_dir>/classifier.keras` via a temporary file, so a reader never sees half of it."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, CLASSIFIER_FILE)
    tmp = os.path.join(output_dir, f".tmp-{os.getpid()}-{CLASSIFIER_FILE}")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def write_result(result, output_dir):
    from tfssl.training import write_text_atomic

    path = os.path.join(output_dir, RESULT_FILE)
    write_text_atomic(path, json.dumps(result, indent=2, default=_json_default))
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def labelled_subset(config, image_size):
    """The class-balanced labelled subset of `config.train_split`.

    Returns:
      `(dataset unbatched, size, per-class counts list, num_classes, split size)`.
    """
    split = config.load_split(config.train_split, image_size)
    if not split.num_classes:
        raise ValueError(f"{config.dataset}:{config.train_split} has no labels; fine-tuning needs labels")
    labels = split_labels(split)
    indices = class_balanced_subset(labels, config.label_fraction, config.subset_seed, split.num_classes)
    counts = np.bincount(labels[indices], minlength=split.num_classes).tolist()
    dataset = subset_dataset(split, indices).cache()
    return dataset, int(indices.size), counts, int(split.num_classes), int(split.num_examples)


def fine_tune(config, verbose=1):
    """Fine-tunes `config.encoder` (or a random init) on a labelled fraction; writes the outputs.

    With `config.distill_from` set, runs SimCLRv2 distillation instead (`tfssl.finetune.distill`).

    Args:
      config: `FineTuneConfig`.
      verbose: 0 silent, 1 progress.

    Returns:
      The result dict written to `<output_dir>/result.json`: val_accuracy (selected), test_accuracy
      (selected epoch only), selected_epoch, num_labelled, labels_per_class, history, source, config,
      classifier_path.
    """
    config.validate()
    if config.distill_from:
        from tfssl.finetune.distill import distill

        return distill(config, verbose=verbose)
    start = time.time()
    keras.mixed_precision.set_global_policy("float32")
    features, source = resolve_features(config)
    size = source["image_size"]
    data, num_labelled, counts, num_classes, split_size = labelled_subset(config, size)
    val = config.load_split(config.val_split, size)
    test = config.load_split(config.test_split, size)

    keras.utils.set_random_seed(config.seed)
    classifier = build_classifier(features, num_classes, config.zero_init_head)
    frozen = freeze_up_to(classifier, config.fine_tune_after_block)
    steps = num_labelled // min(config.batch_size, num_labelled)
    classifier.compile(optimizer=make_optimizer(config, steps),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    augment = light_augment(size, config.crop_min_area) if config.augment else None
    if verbose:
        per_class = str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
        print(f"Fine-tuning on {num_labelled} labelled images ({config.label_fraction:g} of "
              f"{config.dataset}:{config.train_split}, {per_class} per class), {config.epochs} epochs of "
              f"{steps} steps; {len(frozen)} layers frozen", flush=True)
    history, selected, val_accuracy = fit_select(
        classifier, classifier,
        lambda epoch: train_batches(data, num_labelled, config.batch_size, size, augment, config.seed, epoch),
        eval_batches(val, size, config.eval_batch_size), config.epochs, verbose)
    test_accuracy = Predictor(classifier).accuracy(eval_batches(test, size, config.eval_batch_size))
    path = save_classifier(classifier, config.output_dir)
    result = {
        "mode": "fine_tune", "val_accuracy": val_accuracy, "test_accuracy": test_accuracy,
        "selected_epoch": selected, "num_labelled": num_labelled, "labels_per_class": counts,
        "num_classes": num_classes, "train_split_size": split_size,
        "num_val": int(val.num_examples), "num_test": int(test.num_examples),
        "frozen_layers": len(frozen), "trainable_parameters": int(sum(np.prod(v.shape) for v in
                                                                      classifier.trainable_weights)),
        "source": source, "history": history, "config": config.to_dict(), "classifier_path": path,
        "seconds": round(time.time() - start, 1),
    }
    result["result_path"] = write_result(result, config.output_dir)
    if verbose:
        print(f"Selected epoch {selected}: val accuracy {val_accuracy:.4f}, test accuracy {test_accuracy:.4f}")
    return result
