"""SimCLRv2 distillation: a student learns the teacher's temperature-softened predictions on unlabelled images.

Chen et al. 2020b, "Big Self-Supervised Models are Strong Semi-Supervised Learners", sec. 2.3, eq. (2):

    L = - sum_i sum_y P_T(y | x_i; tau) log P_S(y | x_i; tau),   P(y | x; tau) = softmax(logits / tau)

over unlabelled images x_i (here: every image of the train split, labels ignored). The loss is not
multiplied by tau^2 (as in the paper, unlike Hinton et al. 2015), so with tau != 1 the learning rate
may need retuning.

What a teacher is: a Keras classifier mapping float32 images `[B, S, S, 3]` in [0, 1] to class logits
`[B, C]` whose last layer is the Dense named "classifier" -- exactly the `classifier.keras` written by
`tfssl-finetune` (pass the file, or its `--output_dir`), or a tfssl export of such a classifier
(`export_encoder(classifier, ...)`, whose `assets.extra/encoder.keras` is then the classifier).
"""
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfssl.finetune.loading import CLASSIFIER_FILE, CLASSIFIER_LAYER, _load_export_encoder, _load_keras_file
from tfssl.finetune.loading import freeze_up_to, input_size, source_kind


def load_teacher(path):
    """Loads a teacher classifier (see the module docstring) with every layer frozen.

    Args:
      path: `classifier.keras`, a tfssl-finetune output directory, or an export of a classifier.

    Returns:
      keras.Model, images `[B, S, S, 3]` in [0, 1] -> logits `[B, C]`, `trainable=False`.
    """
    kind = source_kind(path)
    if kind in ("run", "checkpoint"):
        raise ValueError(f"--distill_from={path!r} is a pre-training run, not a classifier: fine-tune it first "
                         f"with tfssl-finetune and pass that --output_dir")
    if kind == "keras":
        file = os.path.join(path, CLASSIFIER_FILE) if os.path.isdir(path) else path
        model = _load_keras_file(file)
    else:
        model = _load_export_encoder(path)
    if not isinstance(model, keras.Model) or CLASSIFIER_LAYER not in {layer.name for layer in model.layers}:
        raise ValueError(f"--distill_from={path!r} is not a tfssl-finetune classifier (no {CLASSIFIER_LAYER!r} "
                         "layer); a teacher is the classifier.keras that tfssl-finetune writes")
    model.trainable = False
    return model


def soft_label_loss(teacher_logits, student_logits, temperature):
    """Mean over the batch of -sum_y softmax(t / tau) log softmax(s / tau) (eq. 2 of SimCLRv2).

    Args:
      teacher_logits: `[B, C]`.
      student_logits: `[B, C]`.
      temperature: tau > 0.

    Returns:
      scalar float32.
    """
    targets = tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / temperature, axis=-1)
    per_example = tf.nn.softmax_cross_entropy_with_logits(
        labels=tf.stop_gradient(targets), logits=tf.cast(student_logits, tf.float32) / temperature)
    return tf.reduce_mean(per_example)


class Distiller(keras.Model):
    """Training wrapper: `fit` on image batches trains `student` towards the frozen `teacher`.

    Both see the same augmented view (resized to each network's input side when they differ).

    Args:
      student: classifier, images `[B, S_s, S_s, 3]` -> logits `[B, C]`.
      teacher: frozen classifier, images `[B, S_t, S_t, 3]` -> logits `[B, C]`.
      temperature: tau.
    """

    def __init__(self, student, teacher, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.temperature = float(temperature)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("distill_loss", "teacher_agreement")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.student(images, training=training)

    def _resize(self, images, model):
        size = input_size(model)
        if images.shape[1] == size:
            return images
        return tf.image.resize(images, [size, size], method="bilinear", antialias=True)

    def train_step(self, images):
        teacher_logits = self.teacher(self._resize(images, self.teacher), training=False)
        student_images = self._resize(images, self.student)
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            student_logits = self.student(student_images, training=True)
            loss = soft_label_loss(teacher_logits, student_logits, self.temperature)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        agree = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(teacher_logits, -1), tf.argmax(student_logits, -1)),
                                       tf.float32))
        self.trackers["distill_loss"].update_state(loss)
        self.trackers["teacher_agreement"].update_state(agree)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def distill(config, verbose=1):
    """Trains a student classifier on a teacher's soft labels over the unlabelled train images.

    The student is `--encoder` (or `--random_init`, e.g. a smaller `--encoder_name/--width_multiplier`)
    plus a new linear classifier; the epoch is selected on validation accuracy and the test split is
    scored once. Writes `classifier.keras` (the student; itself usable as a teacher) and result.json.

    Args:
      config: `FineTuneConfig` with `distill_from` set (already validated).
      verbose: 0 silent, 1 progress.

    Returns:
      The result dict (see `fine_tune`), mode "distill", with the teacher's accuracies beside it.
    """
    from tfssl.finetune.train import (Predictor, build_classifier, eval_batches, fit_select, light_augment,
                                      make_optimizer, resolve_features, save_classifier, train_batches,
                                      write_result)

    start = time.time()
    keras.mixed_precision.set_global_policy("float32")
    teacher = load_teacher(config.distill_from)
    teacher_size = input_size(teacher)
    num_classes = int(teacher.output.shape[-1])
    features, source = resolve_features(config, default_image_size=teacher_size)
    # Views are made at the larger of the two sides and resized down for the other network.
    size = max(teacher_size, source["image_size"])
    train = config.load_split(config.train_split, size)
    val = config.load_split(config.val_split, size)
    test = config.load_split(config.test_split, size)
    if val.num_classes is not None and val.num_classes != num_classes:
        raise ValueError(f"the teacher predicts {num_classes} classes but {config.dataset} has {val.num_classes}")

    keras.utils.set_random_seed(config.seed)
    student = build_classifier(features, num_classes, config.zero_init_head)
    frozen = freeze_up_to(student, config.fine_tune_after_block)
    steps = train.num_examples // min(config.batch_size, train.num_examples)
    distiller = Distiller(student, teacher, config.distill_temperature, name="distiller")
    distiller.compile(optimizer=make_optimizer(config, steps))
    augment = light_augment(size, config.crop_min_area) if config.augment else None
    images = train.dataset.map(lambda x, y, i: (x, tf.constant(-1, tf.int64), i))  # labels are never read
    if verbose:
        print(f"Distilling {config.distill_from} into a {source['kind']} student on {train.num_examples} "
              f"unlabelled images, temperature {config.distill_temperature:g}, {config.epochs} epochs", flush=True)
    student_size = source["image_size"]
    history, selected, val_accuracy = fit_select(
        distiller, student,
        lambda epoch: train_batches(images, train.num_examples, config.batch_size, size, augment, config.seed,
                                    epoch, with_labels=False),
        eval_batches(val, student_size, config.eval_batch_size), config.epochs, verbose)

    # Validation and test are read in a fixed order, so teacher and student rows line up.
    val_student, val_labels = Predictor(student).logits(eval_batches(val, student_size, config.eval_batch_size))
    val_teacher, _ = Predictor(teacher).logits(eval_batches(val, teacher_size, config.eval_batch_size))
    test_accuracy = Predictor(student).accuracy(eval_batches(test, student_size, config.eval_batch_size))
    path = save_classifier(student, config.output_dir)
    result = {
        "mode": "distill", "val_accuracy": val_accuracy, "test_accuracy": test_accuracy,
        "selected_epoch": selected, "num_labelled": 0, "num_unlabelled": int(train.num_examples),
        "num_classes": num_classes, "num_val": int(val.num_examples), "num_test": int(test.num_examples),
        "teacher": config.distill_from, "teacher_val_accuracy": float(np.mean(val_teacher.argmax(1) == val_labels)),
        "val_teacher_agreement": float(np.mean(val_teacher.argmax(1) == val_student.argmax(1))),
        "frozen_layers": len(frozen), "source": source, "history": history, "config": config.to_dict(),
        "classifier_path": path, "seconds": round(time.time() - start, 1),
    }
    result["result_path"] = write_result(result, config.output_dir)
    if verbose:
        print(f"Selected epoch {selected}: student val accuracy {val_accuracy:.4f} (teacher "
              f"{result['teacher_val_accuracy']:.4f}), test accuracy {test_accuracy:.4f}")
    return result
