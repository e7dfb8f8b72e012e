"""Every method's train step with device augmentation compiles with XLA and trains like the uncompiled step.

Two models are built from the same `TrainConfig` (`augment_on="device"`), given the same weights (encoder,
heads, target networks, queue, memory bank, probe) and the same uint8 batches, and stepped twice (the ViT
once) by the training loop's own step function, one with `jit_compile=True`, one without. The views are made inside the
step from the same seeds (each batch's "seed" rows, `batch_seed(seed, 0, step)`; `tfssl.rng` draws the same
parameters under XLA), so the losses, the logged metrics
and every variable afterwards must agree up to float32 reordering (tolerances below).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl.augment import batch_seed
from tfssl.config import TrainConfig
from tfssl.training import _make_step_function, build_training

# 20 px rather than 16: SimCLR's blur kernel is 10% of the side, 1 (identity) below 20 px, 3 at 20.
SIZE, BATCH, NUM_CLASSES, STEPS = 20, 8, 4, 2

COMMON = dict(model_dir="unused", image_size=SIZE, batch_size=BATCH, warmup_epochs=0.0, learning_rate=0.5,
              lr_scaling="none", weight_decay=1e-4, blur="true", seed=3)
# Method options: 2-layer heads 16 -> 16 (predictors as wide), a 32-key MoCo queue in 2 BN groups, 16
# InstDis negatives, EMA from 0.9. SwAV and DINO: two 20 px and two 8 px crops; SwAV's one-batch queue is full,
# so used, in step 2.
HEADS = dict(proj_layers=2, proj_dim=16, proj_hidden_dim=16)
SIAMESE = dict(HEADS, pred_hidden_dim=0)

# case: (TrainConfig settings, method options)
CASES = {
    "simclr": (dict(method="simclr"), dict(HEADS, temperature=0.2)),
    "moco_v1": (dict(method="moco_v1", optimizer="sgd"),
                dict(proj_dim=16, queue_size=32, bn_splits=2, temperature=0.07)),
    "moco_v2": (dict(method="moco_v2", optimizer="sgd"), dict(HEADS, queue_size=32, bn_splits=2, temperature=0.2)),
    "moco_v3": (dict(method="moco_v3", optimizer="lamb", learning_rate=0.01),
                dict(SIAMESE, tau_base=0.9, temperature=0.2)),
    "byol": (dict(method="byol"), dict(SIAMESE, tau_base=0.9)),
    "simsiam": (dict(method="simsiam", optimizer="sgd", learning_rate=0.05), dict(SIAMESE, fix_predictor_lr=True)),
    "instdis": (dict(method="instdis", optimizer="sgd"),
                dict(proj_dim=16, negatives=16, temperature=0.07, head_bn=True)),
    "barlow_twins": (dict(method="barlow_twins", learning_rate=0.1), dict(HEADS, lambd=0.01)),
    "vicreg": (dict(method="vicreg", learning_rate=0.1), dict(HEADS)),
    "invaspread": (dict(method="invaspread", optimizer="sgd", learning_rate=0.05), dict(proj_dim=16, temperature=0.1)),
    "swav": (dict(method="swav", optimizer="sgd", learning_rate=0.1),
             dict(proj_hidden_dim=16, proj_dim=16, prototypes=10, queue_length=8, queue_start_epoch=0.0,
                  freeze_prototypes_epochs=0.0, small_crops=2, small_size=8)),
    "dino": (dict(method="dino", optimizer="sgd", learning_rate=0.1),
             dict(out_dim=32, hidden_dim=16, bottleneck_dim=8, tau_base=0.9, local_crops=2, local_size=8,
                  freeze_last_layer_epochs=0.0)),
    # MoCo v3's ViT (a real encoder: 25 patches of 4 px, 12 blocks). SGD, not the paper's AdamW: Adam's
    # first steps move each weight by about lr * sign(gradient), so a weight whose gradient is ~0 moves by
    # +-lr on an ulp of difference between the XLA and plain gradients (seen: probe loss 1.4e-4 apart after
    # 2 AdamW steps), which says nothing about the compiled step being right.
    "moco_v3_vit": (dict(method="moco_v3", encoder="vit_tiny", patch_size=4, width_multiplier=1.0, optimizer="sgd",
                         learning_rate=0.05), dict(SIAMESE, tau_base=0.9, temperature=0.2)),
}
# Weight tolerance as a fraction of each variable's update (see the test). The ViT's patch-embedding bias
# is added to all 25 tokens of 16 images, and its gradient is a sum of 400 terms that nearly cancel (the
# LayerNorms remove a shift common to a token's features), so the float32 reordering noise is a larger part
# of it (seen: 2e-3 of its update).
UPDATE_TOLERANCE = {"moco_v3_vit": 1e-2}
# The ViT case takes one step: after two, a projector unit whose pre-activation sits at the ReLU kink for
# some image took the other side in one run (4 of 3072 kernel entries 1% of their update apart) -- a
# discontinuity that any float32 difference can cross, not an error of the compiled step.
NUM_STEPS = {"moco_v3_vit": 1}
DEFAULT_RUN = ("simclr",)  # the other methods' XLA steps run with -m slow (about a minute each)


def _batch(step, with_index):
    rng = np.random.default_rng(step)
    # Smooth images (blocks of 4 px plus noise), so crops, flips and blur change them visibly.
    coarse = rng.uniform(0, 255, size=(BATCH, SIZE // 4, SIZE // 4, 3))
    images = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2) + rng.normal(0, 12, size=(BATCH, SIZE, SIZE, 3))
    images = tf.constant(np.clip(images, 0, 255).astype(np.uint8))
    labels = tf.constant(rng.integers(0, NUM_CLASSES, size=BATCH), tf.int64)
    index = tf.constant(rng.choice(64, size=BATCH, replace=False), tf.int64)
    # The device-path batch of step `step` of epoch 0, as pretrain_dataset(augment=None) makes it.
    seed = tf.tile(batch_seed(COMMON["seed"], 0, step)[None], [BATCH, 1])
    batch = {"images": images, "seed": seed, "labels": labels}
    if with_index:
        batch["index"] = index
    return batch


def _run(config, weights, jit_compile, steps):
    strategy = tf.distribute.get_strategy()
    model, _ = build_training(config, strategy, NUM_CLASSES, steps_per_epoch=8, total_steps=8, num_examples=64)
    if weights is not None:
        model.set_weights(weights)
    initial = [w.copy() for w in model.get_weights()]
    step = _make_step_function(model, strategy, jit_compile)
    batches = tf.data.Dataset.from_tensors(_batch(0, model.needs_index))
    for index in range(1, steps):
        batches = batches.concatenate(tf.data.Dataset.from_tensors(_batch(index, model.needs_index)))
    iterator = iter(batches)  # one iterator, so the step is traced (and compiled) once
    logs = [{k: float(v) for k, v in step(iterator).items()} for _ in range(steps)]
    return model, initial, logs


@pytest.mark.parametrize("case", [
    pytest.param(name, marks=[pytest.mark.slow] if name not in DEFAULT_RUN else [])
    for name in CASES])
def test_xla_step_matches_uncompiled_step(case, request):
    settings, options = CASES[case]
    if "encoder" not in settings:  # the ViT case builds the real encoder, the others the 2-conv one
        request.getfixturevalue("tiny_encoder_in_build_method")
    config = TrainConfig(**{**COMMON, **settings}, augment_on="device", jit_compile=True, method_options=options)
    config.validate()
    keras.utils.set_random_seed(0)
    steps = NUM_STEPS.get(case, STEPS)
    plain, initial, plain_logs = _run(config, None, jit_compile=False, steps=steps)
    compiled, initial_compiled, xla_logs = _run(config, initial, jit_compile=True, steps=steps)
    for a, b in zip(initial, initial_compiled):
        np.testing.assert_array_equal(a, b)

    # Losses and metrics: XLA fuses and reorders float32 reductions (means over the batch, softmax
    # denominators, BN statistics) and the views it makes differ by a few ulps (<= 3e-6, see
    # tests/augment/test_augment_xla.py), so values agree to ~1e-6 relative, not bitwise. rtol 1e-4 leaves
    # headroom over that; different views (another seed) change the loss by > 1e-2.
    for step, (want, got) in enumerate(zip(plain_logs, xla_logs)):
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=f"{name} step {step}")

    # Every variable after the steps. Updates are scaled by the learning rate and (LARS, LAMB) by trust
    # ratios, so the float32 noise above enters them relative to the update, not to the weight: the tolerance
    # is 1e-3 of this variable's update (plus 1e-6 for variables that barely move; UPDATE_TOLERANCE for the
    # ViT). A missed or doubled step, another view or another BN shuffle moves a weight by the order of its
    # whole update.
    after_plain, after_xla = plain.get_weights(), compiled.get_weights()
    moved, tolerance = 0, UPDATE_TOLERANCE.get(case, 1e-3)
    for variable, start, want, got in zip(plain.weights, initial, after_plain, after_xla):
        update = np.max(np.abs(want - start))
        moved += update > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=tolerance * update + 1e-6, err_msg=variable.path)
    assert moved > 0.5 * len(initial), f"only {moved}/{len(initial)} variables moved"
    assert int(compiled.optimizer.iterations.numpy()) == steps
    worst = max(np.max(np.abs(a - b)) for a, b in zip(after_plain, after_xla))
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(plain_logs, xla_logs))
    print(f"{case}: max |XLA - plain| loss {loss_diff:.2e}, weights {worst:.2e}")
