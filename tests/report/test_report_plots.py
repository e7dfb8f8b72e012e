"""tfssl.report.plots: training curves, augmentation preview, t-SNE map and projector files are real pictures."""
import csv
import json
import math
import os

import numpy as np
import pytest

from tfssl.config import TrainConfig
from tfssl.report import plots

matplotlib_image = pytest.importorskip("matplotlib.image")


def read_png(path):
    image = matplotlib_image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    return image[..., :3]


def assert_not_blank(image):
    assert float(image.std()) > 0.02
    # More than a couple of colours: lines, text, pixels.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


def write_metrics(model_dir, columns, steps=40, seed=0, loss_scale=1.0):
    rng = np.random.default_rng(seed)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, ["step", "epoch", *columns, "elapsed_s"])
        writer.writeheader()
        for i in range(1, steps + 1):
            values = {"loss": loss_scale * (5 * math.exp(-i / 10) + 0.1 * rng.random()),
                      "probe_loss": 2.3 * math.exp(-i / 20), "probe_acc": 0.1 + 0.8 * (1 - math.exp(-i / 15)),
                      "learning_rate": 0.5 * min(1, i / 10), "collapse_std": 0.05 + 0.03 * (1 - math.exp(-i / 8)),
                      "knn_acc": 0.2 + 0.6 * i / steps, "key_acc": i / steps,
                      "teacher_temperature": 0.04 + 0.03 * i / steps}
            row = {"step": i * 10, "epoch": i // 20, "elapsed_s": i * 0.5}
            row.update({c: f"{values[c]:.6g}" for c in columns})
            if i == 5 and "knn_acc" in columns:
                row["knn_acc"] = ""  # a monitor that is not logged every row
            writer.writerow(row)
    config = TrainConfig(model_dir=model_dir, method="simclr", method_options={"proj_dim": 64})
    with open(os.path.join(model_dir, "flags.json"), "w") as f:
        f.write(config.to_json())


def test_training_curves_draws_every_panel(tmp_path):
    run = str(tmp_path / "run")
    write_metrics(run, ["learning_rate", "loss", "probe_loss", "probe_acc", "collapse_std", "knn_acc", "key_acc",
                        "teacher_temperature"])
    path = plots.training_curves(run)
    assert path == os.path.join(run, "pictures", "training_curves.png")
    image = read_png(path)
    # 5 panels (loss, accuracy + kNN + key_acc, lr, collapse, teacher_temperature) in 2 columns x 3 rows of 6 x 3.6 inches at 100 dpi.
    assert image.shape[:2] == (3 * 360, 2 * 600)
    assert_not_blank(image)
    # The unused sixth cell (bottom right) is empty: white.
    assert image[2 * 360 + 40:3 * 360 - 40, 600 + 40:1200 - 40].min() > 0.99


def test_training_curves_follow_the_data_and_the_columns_present(tmp_path):
    a, b, c = (str(tmp_path / name) for name in "abc")
    write_metrics(a, ["learning_rate", "loss", "probe_acc"])
    write_metrics(b, ["learning_rate", "loss", "probe_acc"], loss_scale=10.0)
    write_metrics(c, ["learning_rate", "loss"])
    image_a, image_b = read_png(plots.training_curves(a)), read_png(plots.training_curves(b))
    assert image_a.shape == image_b.shape == (360 * 2, 1200, 3)  # 3 panels: loss, accuracy, lr
    assert np.abs(image_a - image_b).mean() > 1e-3  # a different loss curve is a different picture
    assert read_png(plots.training_curves(c)).shape == (360, 1200, 3)  # 2 panels: one row


def test_collapse_reference_uses_resolved_embedding_width(tmp_path):
    assert plots.embedding_dim_from_flags(json.loads(TrainConfig(model_dir="x", method="simclr").to_json())) == 128
    assert plots.embedding_dim_from_flags(
        json.loads(TrainConfig(model_dir="x", method="simclr", method_options={"proj_dim": 16}).to_json())) == 16
    assert plots.embedding_dim_from_flags({}) is None


def test_training_curves_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plots.training_curves(str(tmp_path))
    (tmp_path / "metrics.csv").write_text("step,epoch,loss,elapsed_s\n")
    with pytest.raises(ValueError, match="no logged step"):
        plots.training_curves(str(tmp_path))


def fashion_mnist_images(count=4):
    config = TrainConfig(model_dir="x", dataset="fashion_mnist", image_size=28)
    try:
        return plots.sample_images(config.load_split(f"train[:{count}]"), count)
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST not available here: {error}")


def test_augmentation_preview_of_a_real_recipe(tmp_path):
    images = fashion_mnist_images(4)
    assert images.shape == (4, 28, 28, 1) and images.dtype == np.uint8
    config = TrainConfig(model_dir=str(tmp_path), method="simclr", image_size=28, color_jitter_strength=0.5)
    path = plots.augmentation_preview(config, images, str(tmp_path / "a.png"), seed=3)
    image = read_png(path)
    # 3 columns (original + 2 views) of 1.3 in + 0.4 in, 4 rows of 1.3 in + 0.6 in, at 100 dpi.
    assert image.shape[:2] == (580, 430)
    assert_not_blank(image)
    # Another seed makes other views.
    other = read_png(plots.augmentation_preview(config, images, str(tmp_path / "b.png"), seed=4))
    assert np.abs(image - other).mean() > 1e-3


def test_augmentation_preview_of_multi_crop_views_keeps_their_sizes(tmp_path):
    from tfssl.augment import CropGroup, SimCLRAugment, ViewRecipe

    images = fashion_mnist_images(3)
    recipe = ViewRecipe([CropGroup(SimCLRAugment(28), 2), CropGroup(SimCLRAugment(14, crop_area=(0.05, 0.3)), 3)])
    image = read_png(plots.augmentation_preview(recipe, images, str(tmp_path / "m.png")))
    # Widths 28 + 2 x 28 + 3 x 14 px in units of the largest view: 4.5 x 1.3 in + 0.4 in.
    assert image.shape[:2] == (round(100 * (1.3 * 3 + 0.6)), round(100 * (1.3 * 4.5 + 0.4)))
    assert_not_blank(image)


def clustered(n_per_class=100, dim=32, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 6
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def test_embedding_map_separates_clusters_and_writes_projector_files(tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import ProjectorConfig

    features, labels = clustered(n_per_class=50)
    projector = tmp_path / "tb"
    out = plots.embedding_map(features, labels, str(tmp_path / "map.png"), class_names=["a", "b", "c"],
                              max_points=120, projector_dir=str(projector), iterations=300)
    image = read_png(out["path"])
    assert image.shape[:2] == (650, 800)
    assert_not_blank(image)
    indices, xy = out["indices"], out["coordinates"]
    assert len(indices) == 120 == len(set(indices.tolist())) and xy.shape == (120, 2)
    # Every point is closer to its own class's centre than to any other's on the map.
    chosen = labels[indices]
    centres = np.stack([xy[chosen == k].mean(0) for k in range(3)])
    nearest = np.argmin(((xy[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == chosen).mean() > 0.95
    # Projector files: the same 120 points, their labels, a config pointing at both.
    rows = (projector / "embeddings.tsv").read_text().splitlines()
    assert len(rows) == 120 and all(len(r.split("\t")) == 32 for r in rows)
    np.testing.assert_allclose(np.array([r.split("\t") for r in rows], float), features[indices], rtol=1e-5,
                               atol=1e-5)
    meta = (projector / "metadata.tsv").read_text().splitlines()
    assert meta[0] == "label\tclass" and len(meta) == 121
    assert [m.split("\t") for m in meta[1:4]] == [[str(k), "abc"[k]] for k in chosen[:3]]
    config = text_format.Parse((projector / "projector_config.pbtxt").read_text(), ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_path == "embeddings.tsv" and embedding.metadata_path == "metadata.tsv"
    assert list(embedding.tensor_shape) == [120, 32]


def test_embedding_map_is_deterministic_and_checks_shapes(tmp_path):
    features, labels = clustered(n_per_class=15)
    a = plots.embedding_map(features, labels, str(tmp_path / "a.png"), seed=1, iterations=250)
    b = plots.embedding_map(features, labels, str(tmp_path / "b.png"), seed=1, iterations=250)
    np.testing.assert_allclose(a["coordinates"], b["coordinates"])
    with pytest.raises(ValueError, match="labels"):
        plots.embedding_map(features, labels[:-1], str(tmp_path / "c.png"))


def test_run_pictures_never_raise(tmp_path, caplog):
    class Broken:
        seed = 0

    assert plots.write_run_pictures(Broken(), None, str(tmp_path / "missing")) == []
    assert plots.write_eval_pictures(str(tmp_path), np.zeros((3, 2)), np.zeros(2)) is None
