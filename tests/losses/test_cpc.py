"""CPC InfoNCE against explicit numpy loops, closed forms, the positive's location and 2 replicas = 1 device."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses.cpc import cpc_infonce_loss


def numpy_cpc(z, predictions, steps, temperature=1.0, reduction="mean"):
    """Loops over every step, image, valid position and candidate; predictions[n] is the full [B, H, W, D]."""
    z = np.asarray(z, np.float64)
    batch, height, width, _ = z.shape
    step_losses, step_accuracies = [], []
    for n, k in enumerate(steps):
        losses, hits = [], []
        for b in range(batch):
            for i in range(height - k):
                for j in range(width):
                    p = np.asarray(predictions[n][b, i, j], np.float64)
                    scores = {}
                    for b2 in range(batch):
                        for i2 in range(height):
                            for j2 in range(width):
                                scores[(b2, i2, j2)] = float(p @ z[b2, i2, j2]) / temperature
                    values = np.array(list(scores.values()))
                    top = values.max()
                    log_denominator = top + np.log(np.exp(values - top).sum())
                    losses.append(log_denominator - scores[(b, i + k, j)])
                    hits.append(max(scores, key=scores.get) == (b, i + k, j))
        step_losses.append(np.mean(losses))
        step_accuracies.append(np.mean(hits))
    total = np.mean(step_losses) if reduction == "mean" else np.sum(step_losses)
    return total, np.mean(step_accuracies), np.array(step_losses)


def _data(batch, grid, dim, steps, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(batch, grid, grid, dim)).astype(np.float32)
    predictions = [(0.5 * np.roll(z, -k, axis=1) + rng.normal(size=z.shape)).astype(np.float32) for k in steps]
    return z, predictions


@pytest.mark.parametrize("batch,grid,dim,steps,temperature", [
    (2, 3, 4, [1, 2], 1.0), (3, 4, 5, [1, 2, 3], 0.5), (2, 4, 4, [3, 1], 2.0), (1, 3, 5, [2], 1.0),
])
def test_matches_numpy_loops(batch, grid, dim, steps, temperature):
    z, predictions = _data(batch, grid, dim, steps, seed=batch * 10 + grid)
    out = cpc_infonce_loss(z, predictions, steps, temperature)
    want, accuracy, step_losses = numpy_cpc(z, predictions, steps, temperature)
    np.testing.assert_allclose(out.loss.numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(out.step_losses.numpy(), step_losses, rtol=1e-5)
    np.testing.assert_allclose(out.accuracy.numpy(), accuracy, atol=1e-6)
    summed = cpc_infonce_loss(z, predictions, steps, temperature, step_reduction="sum").loss
    np.testing.assert_allclose(summed.numpy(), numpy_cpc(z, predictions, steps, temperature, "sum")[0], rtol=1e-5)
    # Only the valid rows given, or the predictions stacked: the same loss.
    valid = [p[:, :grid - k] for p, k in zip(predictions, steps)]
    np.testing.assert_allclose(cpc_infonce_loss(z, valid, steps, temperature).loss.numpy(), want, rtol=1e-5)
    stacked = tf.stack(predictions)
    np.testing.assert_allclose(cpc_infonce_loss(z, stacked, steps, temperature).loss.numpy(), want, rtol=1e-5)


def test_rows_that_predict_nothing_are_ignored():
    z, predictions = _data(2, 4, 3, [2], seed=1)
    base = cpc_infonce_loss(z, predictions, [2]).loss.numpy()
    predictions[0][:, 2:] = 1e3  # rows 2 and 3 would predict rows 4 and 5, which do not exist
    assert cpc_infonce_loss(z, predictions, [2]).loss.numpy() == base


def _one_hot_grid(batch, grid, scale):
    """Every location of every image its own orthogonal direction: z[b, i, j] = scale * e_(b, i, j)."""
    count = batch * grid * grid
    return (scale * np.eye(count, dtype=np.float32)).reshape(batch, grid, grid, count)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_closed_form_when_predictions_are_the_true_targets(scale):
    batch, grid, steps = 2, 3, [1, 2]
    z = _one_hot_grid(batch, grid, scale)
    predictions = [np.roll(z, -k, axis=1) for k in steps]  # row i holds z row i + k
    out = cpc_infonce_loss(z, predictions, steps)
    # Positive logit scale^2, all other 17 candidates 0.
    count = batch * grid * grid
    want = np.log(np.exp(scale ** 2) + count - 1) - scale ** 2
    np.testing.assert_allclose(out.loss.numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(out.step_losses.numpy(), [want, want], rtol=1e-6)
    assert out.accuracy.numpy() == 1.0


def test_the_positive_is_the_true_location_every_permutation_costs_more():
    batch, grid, steps = 2, 3, [1, 2]
    z = _one_hot_grid(batch, grid, 3.0)
    predictions = [np.roll(z, -k, axis=1) for k in steps]
    best = cpc_infonce_loss(z, predictions, steps).loss.numpy()
    rng = np.random.default_rng(0)
    flat = z.reshape(-1, z.shape[-1])
    for _ in range(20):
        # The same candidates in other places (same negatives set): only the positive's identity moves.
        permuted = flat[rng.permutation(len(flat))].reshape(z.shape)
        assert cpc_infonce_loss(permuted, predictions, steps).loss.numpy() > best
    # Targets off by one image, one row or one column: every positive is missed.
    for axis in (0, 1, 2):
        out = cpc_infonce_loss(np.roll(z, 1, axis=axis), predictions, steps)
        assert out.loss.numpy() > best and out.accuracy.numpy() == 0.0


def test_two_replicas_equal_one_device(two_replica_strategy):
    """Candidates gathered across replicas: loss, input gradients and weight gradients equal one device."""
    steps = [1, 2]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3, 3, 5)).astype(np.float32)  # 2 images per replica
    noise = rng.normal(size=(len(steps), 4, 3, 3, 4)).astype(np.float32)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)

    def loss_and_grads(w, x, noise, num_replicas):
        with tf.GradientTape(persistent=True) as tape:
            z = tf.einsum("bijc,cd->bijd", x, w)
            tape.watch(z)
            predictions = [0.3 * tf.roll(z, -k, axis=1) + noise[n] for n, k in enumerate(steps)]
            for p in predictions:
                tape.watch(p)
            loss = cpc_infonce_loss(z, predictions, steps, temperature=0.5).loss
            scaled = loss / num_replicas
        # Total dL/dz (targets, candidates and the predictions made from z); dL/dpredictions.
        grad_z, grad_preds = tape.gradient(scaled, [z, predictions],
                                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, tape.gradient(scaled, w), grad_z, tf.stack(grad_preds)

    w_single = tf.Variable(w0)
    single = loss_and_grads(w_single, tf.constant(x), tf.constant(noise), 1)

    strategy = two_replica_strategy
    with strategy.scope():
        w = tf.Variable(w0)
    ds = tf.data.Dataset.from_tensor_slices((x, np.moveaxis(noise, 1, 0))).batch(4)
    xs, ns = next(iter(strategy.experimental_distribute_dataset(ds)))
    fn = tf.function(lambda a, b: loss_and_grads(w, a, tf.transpose(b, [1, 0, 2, 3, 4]), 2))
    loss, grad_w, grad_z, grad_p = strategy.run(fn, args=(xs, ns))
    np.testing.assert_allclose(strategy.reduce("MEAN", loss, axis=None).numpy(), single[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(strategy.reduce("SUM", grad_w, axis=None).numpy(), single[1].numpy(),
                               rtol=1e-4, atol=1e-6)
    local_z = np.concatenate([t.numpy() for t in strategy.experimental_local_results(grad_z)])
    np.testing.assert_allclose(local_z, single[2].numpy(), rtol=1e-4, atol=1e-7)
    local_p = np.concatenate([t.numpy() for t in strategy.experimental_local_results(grad_p)], axis=1)
    np.testing.assert_allclose(local_p, single[3].numpy(), rtol=1e-4, atol=1e-7)
    z0 = np.einsum("bijc,cd->bijd", x, w0)
    want = numpy_cpc(z0, [0.3 * np.roll(z0, -k, axis=1) + noise[n] for n, k in enumerate(steps)], steps, 0.5)[0]
    np.testing.assert_allclose(single[0].numpy(), want, rtol=1e-5)


def test_bad_arguments():
    z = np.zeros((2, 3, 3, 4), np.float32)
    preds = [z, z]
    with pytest.raises(ValueError, match="steps"):
        cpc_infonce_loss(z, preds, [1, 3])  # row i + 3 never exists in a 3-row grid
    with pytest.raises(ValueError, match="steps"):
        cpc_infonce_loss(z, preds, [1, 1])
    with pytest.raises(ValueError, match="one tensor per step"):
        cpc_infonce_loss(z, [z], [1, 2])
    with pytest.raises(ValueError, match=r"step 2 must be \[B, 3, 3, 4\]"):
        cpc_infonce_loss(z, [z, z[..., :3]], [1, 2])
    with pytest.raises(ValueError, match="feature grid"):
        cpc_infonce_loss(z[0], preds, [1, 2])
    with pytest.raises(ValueError, match="temperature"):
        cpc_infonce_loss(z, preds, [1, 2], temperature=0)
    with pytest.raises(ValueError, match="step_reduction"):
        cpc_infonce_loss(z, preds, [1, 2], step_reduction="max")
