"""Pictures of a run: training curves, what the augmentation recipe makes, a t-SNE map of the embeddings.

Everything is drawn with matplotlib's Agg backend (no display needed) and written as PNG files, by default
under `<model_dir>/pictures/`. The embedding map also writes TensorBoard projector files for the same points.
"""
import csv
import json
import math
import os

import numpy as np

PICTURES_DIR = "pictures"
CURVES_FILE = "training_curves.png"
AUGMENT_FILE = "augmentations.png"
EMBEDDING_FILE = "embedding_tsne.png"
DPI = 100

# Columns of metrics.csv that are not plotted as metrics of their own.
_BOOKKEEPING = ("step", "epoch", "elapsed_s")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def pictures_dir(model_dir):
    return os.path.join(model_dir, PICTURES_DIR)


def read_metrics(path):
    """metrics.csv as `{column: float64 array}` (empty cells are NaN); raises FileNotFoundError if absent."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: has this run logged a step yet?")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan

    return {c: np.array([number(r.get(c)) for r in rows], dtype=np.float64) for c in columns}


def resolved_flags(flags):
    """A flags.json dict with every method option filled in (defaults of the fields it leaves unset).

    Falls back to the dict as saved when this tfssl cannot parse it (e.g. a method it does not know).
    """
    import dataclasses

    try:
        from tfssl.config import TrainConfig

        options = TrainConfig.from_json(json.dumps(flags)).options()
        return {**flags, "method_options": dataclasses.asdict(options)}
    except Exception:  # noqa: BLE001 (the report shows what it can)
        return dict(flags)


def embedding_dim_from_flags(flags):
    """The width d of the embeddings the collapse monitor sees, from a flags.json dict (None if unknown).

    Methods name it `proj_dim` (SimCLR, MoCo, BYOL, SimSiam, ...) or `out_dim` (DINO).
    """
    if not (flags or {}).get("method"):
        return None
    options = resolved_flags(flags).get("method_options") or {}
    for key in ("proj_dim", "out_dim"):
        value = options.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return int(value)
    return None


def _panels(metrics):
    """`[(title, [(column, label)], y_label)]` of the panels the columns of metrics.csv allow."""
    have = {c for c, v in metrics.items() if c not in _BOOKKEEPING and np.isfinite(v).any()}
    panels = []
    losses = [c for c in ("loss", "probe_loss") if c in have]
    if losses:
        panels.append(("Loss", losses, "loss"))
    # The online probe, a kNN monitor and the methods' own accuracies (contrast_acc, key_acc, ...): one scale.
    accuracy = [c for c in ("probe_acc",) if c in have]
    accuracy += sorted(c for c in have if c.startswith("knn") and c not in accuracy)
    accuracy += sorted(c for c in have if c.endswith("_acc") and c not in accuracy)
    if accuracy:
        panels.append(("Accuracy (online probe, kNN monitor, method)", accuracy, "accuracy"))
    if "learning_rate" in have:
        panels.append(("Learning rate", ["learning_rate"], "learning rate"))
    if "collapse_std" in have:
        panels.append(("Collapse monitor", ["collapse_std"], "std of normalised z"))
    used = {c for _, cols, _ in panels for c in cols}
    panels.extend((column, [column], column) for column in sorted(have - used))  # each on its own scale
    return panels


def training_curves(model_dir, output_dir=None, embedding_dim=None):
    """Draws metrics.csv of a run as one PNG of subplots (loss, accuracy, lr, collapse monitor, others).

    Args:
      model_dir: run directory holding metrics.csv (and flags.json, for the collapse reference 1/sqrt(d)).
      output_dir: where to write (default `<model_dir>/pictures`).
      embedding_dim: d of the collapse monitor's reference line (default: read from flags.json).

    Returns:
      The path of the PNG.
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    metrics = read_metrics(os.path.join(model_dir, "metrics.csv"))
    steps = metrics.get("step")
    if steps is None or not len(steps):
        raise ValueError(f"{os.path.join(model_dir, 'metrics.csv')} has no logged step")
    if embedding_dim is None:
        flags_path = os.path.join(model_dir, "flags.json")
        if os.path.exists(flags_path):
            with open(flags_path) as f:
                embedding_dim = embedding_dim_from_flags(json.load(f))
    panels = _panels(metrics)
    ncols = 2 if len(panels) > 1 else 1
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 3.6 * nrows), dpi=DPI, squeeze=False)
    for ax, (title, columns, ylabel) in zip(axes.flat, panels):
        for column in columns:
            ok = np.isfinite(metrics[column])
            ax.plot(steps[ok], metrics[column][ok], marker="." if ok.sum() < 30 else None, label=column)
        if columns == ["collapse_std"] and embedding_dim:
            ax.axhline(1 / math.sqrt(embedding_dim), color="grey", linestyle="--",
                       label=f"1/sqrt(d), d={embedding_dim}")
            ax.set_ylim(bottom=0)
        if columns == ["learning_rate"]:
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(os.path.basename(os.path.normpath(model_dir)) or model_dir)
    fig.tight_layout()
    output_dir = output_dir or pictures_dir(model_dir)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, CURVES_FILE)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _as_recipe(config_or_recipe):
    from tfssl.augment import ViewRecipe, as_view_recipe

    if isinstance(config_or_recipe, ViewRecipe):
        return config_or_recipe
    if hasattr(config_or_recipe, "method") and hasattr(config_or_recipe, "options"):
        from tfssl.methods import build_augment

        return build_augment(config_or_recipe)
    return as_view_recipe(config_or_recipe)


def _displayable(view):
    """A view as float images `[B, S, S, C]` in [0, 1]; a patch grid `[B, gy, gx, P, P, C]` is tiled."""
    view = np.clip(np.asarray(view, np.float32), 0, 1)
    if view.ndim == 6:
        b, gy, gx, p, q, c = view.shape
        padded = np.ones((b, gy, gx, p + 1, q + 1, c), np.float32)
        padded[:, :, :, :p, :q] = view
        view = padded.transpose(0, 1, 3, 2, 4, 5).reshape(b, gy * (p + 1), gx * (q + 1), c)
    if view.ndim != 4:
        raise ValueError(f"cannot draw a view of shape {view.shape}")
    return view


def augmentation_preview(config_or_recipe, images, path, seed=0):
    """A grid: one row per image, the original then every view the recipe makes, each at its relative size.

    Args:
      config_or_recipe: a `TrainConfig` (its method's recipe, `tfssl.methods.build_augment`), a
        `ViewRecipe`, or one per-image recipe.
      images: `[N, H, W, C]` uint8 (or float in [0, 1]) images; a handful (4-8) reads best.
      path: PNG to write.
      seed: the batch seed's run seed (views of `batch_seed(seed, 0, 0)`).

    Returns:
      `path`.
    """
    import tensorflow as tf

    from tfssl.augment.recipes import batch_seed

    plt = _pyplot()
    recipe = _as_recipe(config_or_recipe)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or not len(images):
        raise ValueError(f"augmentation_preview needs images [N, H, W, C], got shape {images.shape}")
    views = [_displayable(v) for v in recipe(tf.convert_to_tensor(images), batch_seed(seed, 0, 0))]
    original = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    sizes = [images.shape[1]] + [v.shape[1] for v in views]
    largest = max(sizes)
    # Every column is as wide as its largest view: a 12-px crop is drawn smaller than a 28-px one.
    cell = 1.3  # inches of the largest view
    fig, axes = plt.subplots(len(images), len(sizes), squeeze=False, dpi=DPI,
                             figsize=(cell * sum(s / largest for s in sizes) + 0.4, cell * len(images) + 0.6),
                             gridspec_kw={"width_ratios": sizes})
    for row in range(len(images)):
        for col, size in enumerate(sizes):
            ax = axes[row, col]
            if col == 0:
                picture = original[row]
                ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
            else:
                ax.imshow(views[col - 1][row], vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("original" if col == 0 else f"view {col}\n{size} px", fontsize=8)
    fig.suptitle(f"{recipe.num_views} views per image (sizes {', '.join(map(str, recipe.sizes))} px)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def tsne_coordinates(features, seed=0, iterations=1000):
    """2-D t-SNE of `features` `[n, D]` (PCA to 50 dimensions first when D > 50), fixed seed.

    `iterations` >= 250 gradient steps (scikit-learn's `max_iter`; 1000 is its default).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, np.float64)
    if x.shape[1] > 50 and x.shape[0] > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    return TSNE(n_components=2, init="pca", learning_rate="auto", perplexity=perplexity,
                max_iter=max(250, int(iterations)), random_state=seed).fit_transform(x)


def subsample(labels, max_points, seed=0):
    """Sorted indices of at most `max_points` examples, a fixed random subset (all when fewer)."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def embedding_map(features, labels, path, class_names=None, max_points=2000, seed=0, projector_dir=None,
                  title=None, iterations=1000):
    """t-SNE map of up to `max_points` embeddings coloured by class, and (optionally) projector files.

    Args:
      features: `[n, D]` embeddings (e.g. the test split's encoder features).
      labels: `[n]` integer labels.
      path: PNG to write.
      class_names: names indexed by label (legend), or None.
      max_points: a fixed random subset of this many points is drawn (t-SNE is quadratic-ish).
      seed: seed of the subset and of t-SNE.
      projector_dir: also write TensorBoard projector files for the same points there (`write_projector`).
      iterations: t-SNE gradient steps (>= 250). 2,000 points take ~20 s on one free core.

    Returns:
      dict with `path`, `indices` (the points drawn) and `coordinates` `[m, 2]`.
    """
    plt = _pyplot()
    features, labels = np.asarray(features), np.asarray(labels).astype(np.int64).reshape(-1)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(f"embedding_map needs features [n, D] and labels [n], got {features.shape} and "
                         f"{labels.shape}")
    if len(labels) < 5:
        raise ValueError(f"embedding_map needs at least 5 points, got {len(labels)}")
    indices = subsample(labels, max_points, seed)
    coordinates = tsne_coordinates(features[indices], seed, iterations)
    chosen = labels[indices]
    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=DPI)
    cmap = plt.get_cmap("tab10" if chosen.max() < 10 else "tab20")
    for label in np.unique(chosen):
        mask = chosen == label
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        ax.scatter(coordinates[mask, 0], coordinates[mask, 1], s=6, color=cmap(int(label) % cmap.N), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(indices)} embeddings (seed {seed})")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, fontsize="small", frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    if projector_dir:
        write_projector(features[indices], labels[indices], projector_dir, class_names)
    return {"path": path, "indices": indices, "coordinates": coordinates}


PROJECTOR_TENSORS = "embeddings.tsv"
PROJECTOR_METADATA = "metadata.tsv"


def write_projector(features, labels, logdir, class_names=None, tensor_name="test_embeddings"):
    """TensorBoard projector files: `embeddings.tsv`, `metadata.tsv` and `projector_config.pbtxt` in `logdir`.

    The tensor is a TSV file (`tensor_path`), which the projector reads without a checkpoint; paths in the
    config are relative to `logdir`, so the directory can be moved. `tensorboard --logdir <model_dir>/tensorboard`
    shows them under the Projector tab.

    Returns:
      The path of projector_config.pbtxt.
    """
    from tensorboard.plugins import projector

    features, labels = np.asarray(features, np.float32), np.asarray(labels).reshape(-1)
    os.makedirs(logdir, exist_ok=True)
    with open(os.path.join(logdir, PROJECTOR_TENSORS), "w") as f:
        for row in features:
            f.write("\t".join(f"{v:.6g}" for v in row) + "\n")
    with open(os.path.join(logdir, PROJECTOR_METADATA), "w") as f:
        f.write("label\tclass\n")
        for label in labels:
            name = class_names[int(label)] if class_names is not None and int(label) < len(class_names) else ""
            f.write(f"{int(label)}\t{name}\n")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = tensor_name
    embedding.tensor_path = PROJECTOR_TENSORS
    embedding.metadata_path = PROJECTOR_METADATA
    embedding.tensor_shape.extend(list(features.shape))
    projector.visualize_embeddings(logdir, config)
    return os.path.join(logdir, "projector_config.pbtxt")


def sample_images(split, count=6):
    """The first `count` images of a `DataSplit` as a uint8 array `[count, H, W, C]`."""
    return np.stack([np.asarray(element[0]) for element in split.dataset.take(count).as_numpy_iterator()])


def write_run_pictures(config, split, model_dir, count=6):
    """What `pretrain` draws at the end of a run: the training curves and the augmentation preview.

    Never raises: a failed picture is a warning, not a failed run.

    Returns:
      The paths written.
    """
    from absl import logging

    written = []
    try:
        written.append(training_curves(model_dir))
    except Exception as error:  # noqa: BLE001 (a plot must never fail the run)
        logging.warning("could not draw the training curves of %s: %s", model_dir, error)
    try:
        written.append(augmentation_preview(config, sample_images(split, count),
                                            os.path.join(pictures_dir(model_dir), AUGMENT_FILE), seed=config.seed))
    except Exception as error:  # noqa: BLE001
        logging.warning("could not draw the augmentation preview of %s: %s", model_dir, error)
    return written


def write_eval_pictures(model_dir, features, labels, class_names=None, max_points=2000, seed=0):
    """What `evaluate_run` draws: the t-SNE map of the test features and the projector files. Never raises."""
    from absl import logging

    try:
        return embedding_map(features, labels, os.path.join(pictures_dir(model_dir), EMBEDDING_FILE),
                             class_names=class_names, max_points=max_points, seed=seed,
                             projector_dir=os.path.join(model_dir, "tensorboard"),
                             title=f"t-SNE of test embeddings ({min(len(labels), max_points)} points)")["path"]
    except Exception as error:  # noqa: BLE001
        logging.warning("could not draw the embedding map of %s: %s", model_dir, error)
        return None
