"""SimCLRv2 distillation: the loss formula, teacher loading, and a student that learns the teacher."""
import os

import numpy as np
import pytest

from tfssl.finetune import FineTuneConfig, fine_tune, load_teacher, soft_label_loss


def test_soft_label_loss_matches_numpy():
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
    for tau in (0.5, 1.0, 3.0):
        p = np.exp(t / tau) / np.exp(t / tau).sum(1, keepdims=True)
        log_q = s / tau - np.log(np.exp(s / tau).sum(1, keepdims=True))
        expected = -(p * log_q).sum(1).mean()
        np.testing.assert_allclose(float(soft_label_loss(t, s, tau)), expected, rtol=1e-5)
    # Minimised (equal to the teacher's entropy) when the student copies the teacher.
    p = np.exp(t) / np.exp(t).sum(1, keepdims=True)
    np.testing.assert_allclose(float(soft_label_loss(t, t, 1.0)), -(p * np.log(p)).sum(1).mean(), rtol=1e-5)


def test_teachers_are_finetuned_classifiers(transfer_classifier, simclr_run, simclr_export, tmp_path):
    import keras

    from tfssl.export import export_encoder

    out, _ = transfer_classifier
    classifier = keras.saving.load_model(os.path.join(out, "classifier.keras"))
    exported = export_encoder(classifier, str(tmp_path), 16, model_name="teacher", warmup=False)
    x = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
    for path in (out, os.path.join(out, "classifier.keras"), exported):
        teacher = load_teacher(path)
        assert teacher.output.shape[-1] == 10 and teacher.trainable_variables == []
        np.testing.assert_allclose(teacher(x).numpy(), classifier(x).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="pre-training run, not a classifier"):
        load_teacher(simclr_run)
    with pytest.raises(ValueError, match="not a tfssl-finetune classifier"):
        load_teacher(simclr_export)  # an encoder export: embeddings, not class logits


def test_student_learns_the_teachers_soft_labels(transfer_classifier, tiny, tmp_path):
    teacher_dir, _ = transfer_classifier
    config = FineTuneConfig(distill_from=teacher_dir, random_init=True, encoder_name="resnet18",
                            width_multiplier=0.125, train_split="train[:320]", val_split=tiny["val"],
                            test_split=tiny["test"], epochs=3, batch_size=32, learning_rate=0.1,
                            distill_temperature=2.0, output_dir=str(tmp_path), seed=1)
    result = fine_tune(config, verbose=0)
    assert result["mode"] == "distill" and result["num_labelled"] == 0 and result["num_unlabelled"] == 320
    losses = [row["distill_loss"] for row in result["history"]]
    print("distill", losses, result["val_teacher_agreement"])
    assert losses[-1] < losses[0] - 0.05, losses
    # Agreement above what predicting the teacher's most frequent class everywhere would score.
    teacher = load_teacher(teacher_dir)
    from tfssl.augment import center_resize

    val = config.load_split(tiny["val"])
    images = np.stack([x for x, _, _ in val.dataset.as_numpy_iterator()])
    teacher_pred = teacher.predict(center_resize(images, 16), verbose=0).argmax(1)
    best_constant = np.bincount(teacher_pred).max() / len(teacher_pred)
    assert result["val_teacher_agreement"] > best_constant + 0.1, (result["val_teacher_agreement"], best_constant)
    assert os.path.exists(os.path.join(tmp_path, "classifier.keras"))
    # The student is itself a teacher for a further round.
    assert load_teacher(str(tmp_path)).output.shape[-1] == 10
