"""NT-Xent against an independent numpy implementation, closed forms and a 2-replica run."""
import numpy as np
import pytest
import tensorflow as tf

from tfssl.losses import contrastive_accuracy_and_entropy, nt_xent_loss


def numpy_nt_xent(z1, z2, temperature):
    """SimCLR eq. (1) written the textbook way: one 2N x 2N similarity matrix, positives at i +- N."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / temperature
    two_n = len(z)
    n = two_n // 2
    losses = []
    for i in range(two_n):
        positive = (i + n) % two_n
        others = [k for k in range(two_n) if k != i]
        log_denominator = np.log(np.sum(np.exp(sim[i, others])))
        losses.append(log_denominator - sim[i, positive])
    return float(np.mean(losses))


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_matches_numpy(n, temperature):
    rng = np.random.default_rng(n * 100 + int(temperature * 100))
    z1 = rng.normal(size=(n, 7)).astype(np.float32)
    z2 = (z1 + 0.5 * rng.normal(size=(n, 7))).astype(np.float32)
    out = nt_xent_loss(z1, z2, temperature)
    np.testing.assert_allclose(out.loss.numpy(), numpy_nt_xent(z1, z2, temperature), rtol=2e-5, atol=1e-5)


def test_single_pair_has_zero_loss():
    # With one image the positive is the only candidate besides the masked self: -log(1) = 0.
    out = nt_xent_loss([[1.0, 2.0]], [[-3.0, 0.5]], 0.1)
    assert abs(float(out.loss)) < 1e-6


def test_closed_form_orthogonal_pairs():
    # Two images, identical views, orthogonal embeddings: positive sim 1, both negatives sim 0.
    temperature = 0.5
    eye = np.eye(2, dtype=np.float32)
    expected = np.log(1.0 + 2.0 * np.exp(-1.0 / temperature))
    assert float(nt_xent_loss(eye, eye, temperature).loss) == pytest.approx(expected, rel=1e-6)


def test_unnormalized_inputs_are_normalized():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 4, 3)).astype(np.float32)
    a = nt_xent_loss(z1, z2, 0.2).loss
    b = nt_xent_loss(10.0 * z1, 0.1 * z2, 0.2).loss
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_gradients_finite_even_for_identical_embeddings():
    z = tf.Variable(np.ones((4, 3), np.float32))
    with tf.GradientTape() as tape:
        loss = nt_xent_loss(z, z + 0.0, 0.05).loss
    grad = tape.gradient(loss, z)
    assert np.all(np.isfinite(grad.numpy()))


def test_accuracy_and_entropy_closed_form():
    # Perfectly aligned, well separated pairs: the positive always wins; entropy near 0 at low T.
    eye = np.eye(3, dtype=np.float32)
    out = nt_xent_loss(eye, eye, 0.01)
    acc, entropy = contrastive_accuracy_and_entropy(out.logits, out.labels)
    assert float(acc) == 1.0
    assert float(entropy) < 1e-6
    # All embeddings equal: candidates tie (self masked), softmax uniform over 2N - 1 = 5.
    same = np.ones((3, 2), np.float32)
    out = nt_xent_loss(same, same, 1.0)
    _, entropy = contrastive_accuracy_and_entropy(out.logits, out.labels)
    assert float(entropy) == pytest.approx(np.log(5.0), rel=1e-5)


@pytest.mark.parametrize("bad", [0, -0.1, "0.5", None])
def test_bad_temperature(bad):
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(np.ones((2, 2)), np.ones((2, 2)), bad)


def test_two_replicas_equal_one_device(two_replica_strategy):
    """Negatives gathered across replicas: loss and gradients equal one device on the global batch."""
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(2, 8, 5)).astype(np.float32)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)

    def loss_and_grad(w, a, b, num_replicas):
        # The loss is this replica's local mean; train_step divides it once by the replica count, so the
        # summed gradients of loss / num_replicas are the gradient of the global-batch mean.
        with tf.GradientTape() as tape:
            loss = nt_xent_loss(tf.matmul(a, w), tf.matmul(b, w), 0.2).loss
            scaled = loss / num_replicas
        return loss, tape.gradient(scaled, w)

    w_single = tf.Variable(w0)
    single_loss, single_grad = loss_and_grad(w_single, x1, x2, 1)

    strategy = two_replica_strategy
    with strategy.scope():
        w = tf.Variable(w0)
    ds = tf.data.Dataset.from_tensor_slices((x1, x2)).batch(8)
    a, b = next(iter(strategy.experimental_distribute_dataset(ds)))
    num_replicas = strategy.num_replicas_in_sync
    loss, grad = strategy.run(tf.function(lambda a, b: loss_and_grad(w, a, b, num_replicas)), args=(a, b))
    mean_loss = strategy.reduce("MEAN", loss, axis=None)
    total_grad = strategy.reduce("SUM", grad, axis=None)
    np.testing.assert_allclose(mean_loss.numpy(), single_loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(total_grad.numpy(), single_grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single_loss.numpy(), numpy_nt_xent(x1 @ w0, x2 @ w0, 0.2), rtol=1e-5)
