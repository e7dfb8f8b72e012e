"""Feature extraction at scale: an exported encoder applied to a folder of images or a dataset split.

``embed_images(encoder, images, output)`` (the library side of ``tfssl-embed``) runs the export's own
``serving_default`` signature (raw pixels in, ``{"embedding": [B, D]}`` out) over

* an image folder: every jpg/jpeg/png/bmp/gif file below it (recursive, hidden entries ignored,
  sorted by relative path); each file is decoded defensively, so an unreadable or corrupt file is
  skipped and reported (manifest + one warning line), never a crash; or
* a dataset split: ``fashion_mnist:SPLIT`` or ``tfds:NAME:SPLIT`` (``tfssl.data.load_split``
  grammar, e.g. ``fashion_mnist:test[:64]``), keyed by the example index, with labels.

Outputs (``<output>`` is the path given):

* ``npy`` format: ``<output>`` float32 ``[N, D]`` (written through a memory map, so N x D need not fit
  in memory) and ``<output>.index.tsv``: a header ``row	key	label`` then one line per embedding
  row, ``key`` the file path relative to the folder (``/``-separated; tab, newline and backslash
  escaped as ``\\t``, ``\\n``, ``\\\\``) or the dataset index, ``label`` the class id (-1 when not
  known; folders are unlabelled). The layout TensorBoard's embedding projector reads as metadata.
* ``tfrecord`` format: ``<output>`` of ``tf.train.Example`` records with features ``key`` (bytes),
  ``row``, ``label`` (int64) and ``embedding`` (float list of length D), in row order.
* always ``<output>.manifest.json``: encoder, images, format, count, dim, skipped files, settings.
  It is written last, so its presence means the output is complete.

Why the work is sharded: a large folder takes hours, and an interruption must not lose it. Inputs
are cut into shards of ``shard_batches * batch_size`` consecutive positions (files or examples);
each finished shard is written atomically (temporary file, then rename) into ``<output>.parts/``
beside a ``job.json`` that records what is being computed. Re-running the same command skips the
shards already on disk. Shard boundaries are fixed positions and batches never cross them, so the
batches (and hence the floating-point results) of a resumed run are exactly those of an
uninterrupted one and the final files are byte-identical. A re-run whose encoder, images, format,
batch size or shard size differ from the recorded job is refused (one-line error) unless
``overwrite``; a complete output is not recomputed.

Preprocessing: images are converted to RGB (gray tiled, alpha dropped, as ``tfssl.data.folder``) and
brought to the export's ``image_size`` with ``tfssl.augment.center_resize`` (central square crop,
antialiased bilinear resize), rounded back to 8-bit pixel values, and sent to the signature as
float32 0..255. Doing the resize here lets images of mixed sizes share a batch; for images already
at ``image_size`` the export receives the decoded pixels untouched.
"""

import dataclasses
import glob
import hashlib
import json
import math
import os
import shutil
from typing import Dict, Iterator, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfssl.augment import center_resize
from tfssl.data import folder as folder_lib

FORMATS = ("npy", "tfrecord")
DATASET_PREFIXES = ("fashion_mnist:", "tfds:")
MANIFEST_SUFFIX = ".manifest.json"
INDEX_SUFFIX = ".index.tsv"
PARTS_SUFFIX = ".parts"
_JOB_FILE = "job.json"
_SHARD_PATTERN = "shard-{:06d}.npz"
_MAX_NAMES_IN_WARNING = 5
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


# ----------------------------------------------------------------------------------------------
# Small file helpers.

def _atomic_write_json(path: str, value) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _hash_file(path: str, digest) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def output_paths(output: str) -> Dict[str, str]:
    """The files `embed_images` writes for `output`: keys output, index, manifest, parts."""
    return {"output": output, "index": output + INDEX_SUFFIX, "manifest": output + MANIFEST_SUFFIX,
            "parts": output + PARTS_SUFFIX}


# ----------------------------------------------------------------------------------------------
# The encoder: an export's serving_default signature.

def resolve_export(path: str) -> Tuple[str, dict]:
    """`--encoder` -> (version dir, export metadata) via `tfssl.export` (model dir -> newest version).

    Raises:
        FileNotFoundError: `path` does not exist or is not a tfssl encoder export.
        ValueError: the export's metadata has no integer ``image_size``.
    """
    from tfssl.export import load_export_metadata, resolve_version_dir

    if not path or not os.path.isdir(path):
        raise FileNotFoundError(f"--encoder {path!r} does not exist: pass an exported encoder directory "
                                "(tfssl-export output: a model dir or one of its version dirs)")
    try:
        version_dir = resolve_version_dir(path)
        metadata = load_export_metadata(version_dir)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--encoder is not a tfssl encoder export: {error}") from None
    if not isinstance(metadata.get("image_size"), int):
        raise ValueError(f"{version_dir}: export metadata has no integer image_size; re-export it with "
                         "tfssl-export")
    return os.path.abspath(version_dir), metadata


def export_fingerprint(version_dir: str) -> str:
    """sha256 of the graph and variable index: changes whenever the exported model does."""
    digest = hashlib.sha256()
    for name in ("saved_model.pb", os.path.join("variables", "variables.index")):
        path = os.path.join(version_dir, name)
        if os.path.exists(path):
            digest.update(name.encode())
            _hash_file(path, digest)
    return digest.hexdigest()


class ServingEncoder:
    """The ``serving_default`` signature of an export, fed with raw pixels.

    Attributes:
        image_size: S, the side the images are resized to before the signature.
        dim: D, the embedding width.
    """

    def __init__(self, version_dir: str, image_size: int):
        loaded = tf.saved_model.load(version_dir)
        if "serving_default" not in loaded.signatures:
            raise ValueError(f"{version_dir} has no serving_default signature; re-export it with "
                             "tfssl-export")
        self._loaded = loaded  # keeps the variables the signature captures alive
        self._fn = loaded.signatures["serving_default"]
        inputs = self._fn.structured_input_signature[1]
        self._input_name = "images" if "images" in inputs else next(iter(inputs))
        self._input_dtype = inputs[self._input_name].dtype
        outputs = self._fn.structured_outputs
        if "embedding" not in outputs:
            raise ValueError(f"{version_dir}: serving_default returns {sorted(outputs)}, not 'embedding'")
        self.image_size = int(image_size)
        self.dim = int(outputs["embedding"].shape[-1])

    def __call__(self, pixels: tf.Tensor) -> np.ndarray:
        """uint8 `[B, S, S, 3]` pixels -> float32 numpy `[B, D]` embeddings."""
        result = self._fn(**{self._input_name: tf.cast(pixels, self._input_dtype)})
        return result["embedding"].numpy().astype(np.float32, copy=False)


_LOADED: Dict[Tuple[str, str], ServingEncoder] = {}


def load_serving_encoder(version_dir: str, image_size: int, fingerprint: str) -> ServingEncoder:
    """`ServingEncoder` of an export, reused while the export is unchanged (one kept per process).

    Loading and the first call (graph set-up) take seconds, which repeated calls of `embed_images`
    from one program (several folders, a resumed run) would otherwise pay every time.
    """
    key = (version_dir, fingerprint)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = ServingEncoder(version_dir, image_size)
    return _LOADED[key]


# ----------------------------------------------------------------------------------------------
# Image sources.

def model_pixels(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """One decoded image (uint8 `[H, W, C]`, C in 1..4) -> uint8 `[S, S, 3]` for the signature.

    RGB conversion as `tfssl.data.folder.to_channels`; a different size goes through
    `center_resize` (central square crop + antialiased bilinear resize, as evaluation) and is rounded
    to 8 bits; an image already `S x S` is passed on unchanged.
    """
    image = folder_lib.to_channels(image, 3)

    def resize():
        resized = center_resize(image, image_size)
        return tf.cast(tf.clip_by_value(tf.round(resized * 255.0), 0.0, 255.0), tf.uint8)

    same = tf.reduce_all(tf.equal(tf.shape(image)[:2], [image_size, image_size]))
    return tf.ensure_shape(tf.cond(same, lambda: image, resize), [image_size, image_size, 3])


@dataclasses.dataclass
class Batch:
    """A preprocessed batch: pixels uint8 `[b, S, S, 3]`, positions int64 `[b]`, labels int64 `[b]`."""

    pixels: tf.Tensor
    positions: np.ndarray
    labels: np.ndarray


class FolderSource:
    """Every image file below `root`; positions are indices into the sorted relative paths."""

    kind = "folder"

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.relpaths = self._walk(self.root)
        if not self.relpaths:
            raise ValueError(f"--images folder {root!r} contains no {'/'.join(folder_lib.IMAGE_EXTENSIONS)} "
                             "files (searched recursively)")
        self.num_positions = len(self.relpaths)
        self.class_names = None

    @staticmethod
    def _walk(root: str) -> List[str]:
        found = []
        for current, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = os.path.relpath(current, root)
            found.extend(os.path.normpath(os.path.join(rel, f)) for f in files if folder_lib.is_image_file(f))
        return sorted(p.replace(os.sep, "/") for p in found)

    def description(self) -> dict:
        # Sizes and modification times make an edited folder a different job (resume would mix files).
        digest = hashlib.sha256()
        for rel in self.relpaths:
            stat = os.stat(os.path.join(self.root, rel))
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {"kind": self.kind, "path": self.root, "count": self.num_positions,
                "content_sha256": digest.hexdigest()}

    def key(self, position: int) -> str:
        return self.relpaths[position]

    def shard_batches(self, start: int, stop: int, batch_size: int, image_size: int) -> Iterator[Batch]:
        """Batches of the readable files among positions [start, stop) (unreadable ones are absent)."""
        paths = [os.path.join(self.root, rel) for rel in self.relpaths[start:stop]]
        positions = np.arange(start, stop, dtype=np.int64)

        def load(path, position):
            # channels=0 keeps the file's channel count; expand_animations=False gives a GIF's 1st frame.
            image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
            return model_pixels(image, image_size), position

        # A file that fails to read, decode or resize raises inside the map; ignore_errors drops just
        # that element, and the caller finds it by its missing position.
        dataset = tf.data.Dataset.from_tensor_slices((paths, positions))
        dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
        for pixels, kept in dataset.batch(batch_size).prefetch(2):
            kept = kept.numpy()
            yield Batch(pixels, kept, np.full(kept.shape, -1, np.int64))


class DatasetSource:
    """A `tfssl.data.load_split` split; positions are the split's example indices (0..N-1)."""

    kind = "dataset"

    def __init__(self, spec: str, data_dir: Optional[str] = None):
        from tfssl.data import load_split

        if spec.startswith("tfds:"):
            name, sep, split = spec[len("tfds:"):].partition(":")
            name = "tfds:" + name
        else:
            name, sep, split = spec.partition(":")
        if not sep or not split or name in ("tfds:", ""):
            raise ValueError(f"--images {spec!r}: write a dataset as fashion_mnist:SPLIT or tfds:NAME:SPLIT "
                             "(e.g. fashion_mnist:test[:64])")
        self.spec, self.data_dir = spec, data_dir
        self.split = load_split(name, split, data_dir=data_dir)
        self.num_positions = int(self.split.num_examples)
        if self.num_positions <= 0:
            raise ValueError(f"--images {spec!r} selects no examples")
        self.class_names = self.split.class_names
        self._iterator, self._next_position = None, None

    def description(self) -> dict:
        return {"kind": self.kind, "spec": self.spec, "data_dir": os.path.abspath(self.data_dir)
                if self.data_dir else None, "count": self.num_positions}

    def key(self, position: int) -> str:
        return str(position)

    def shard_batches(self, start: int, stop: int, batch_size: int, image_size: int) -> Iterator[Batch]:
        """Batches of positions [start, stop); shards must be asked for in order.

        One pipeline serves all shards (skipping to the first one once), since restarting a dataset
        at an arbitrary example can mean reading everything before it. Shard sizes are multiples of
        `batch_size`, so its batches never cross a shard boundary.
        """
        if self._iterator is None or self._next_position != start:
            dataset = self.split.dataset.skip(start).map(
                lambda image, label, index: (model_pixels(image, image_size), label, index),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            self._iterator = iter(dataset.batch(batch_size).prefetch(2))
        position = start
        while position < stop:
            pixels, labels, indices = next(self._iterator)
            indices = indices.numpy().astype(np.int64)
            if indices[0] != position:
                raise RuntimeError(f"dataset yielded index {indices[0]} where {position} was expected")
            position += len(indices)
            yield Batch(pixels, indices, labels.numpy().astype(np.int64))
        self._next_position = stop


def open_source(images: str, data_dir: Optional[str] = None):
    """`--images` -> a `FolderSource` (existing folder) or `DatasetSource` (prefix:split)."""
    if not images:
        raise ValueError("--images is required: a folder of images, fashion_mnist:SPLIT or tfds:NAME:SPLIT")
    if os.path.isdir(images):
        return FolderSource(images)
    if images.startswith(DATASET_PREFIXES):
        return DatasetSource(images, data_dir)
    raise ValueError(f"--images {images!r} is neither an existing folder nor a dataset split "
                     "(fashion_mnist:SPLIT or tfds:NAME:SPLIT, e.g. fashion_mnist:test[:64])")


# ----------------------------------------------------------------------------------------------
# Shards.

@dataclasses.dataclass
class Shard:
    """One finished shard: embeddings float32 `[n, D]`, positions / labels int64 `[n]`, skipped positions."""

    embeddings: np.ndarray
    positions: np.ndarray
    labels: np.ndarray
    skipped: np.ndarray

    def save(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the name
            np.savez(f, embeddings=self.embeddings, positions=self.positions, labels=self.labels,
                     skipped=self.skipped)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Shard":
        with np.load(path) as data:
            return cls(**{name: data[name] for name in ("embeddings", "positions", "labels", "skipped")})


def compute_shard(encoder: ServingEncoder, source, start: int, stop: int, batch_size: int,
                  progress: Optional[keras.utils.Progbar] = None) -> Shard:
    """Embeds positions [start, stop) of `source`; positions it could not read are `skipped`."""
    embeddings, positions, labels = [], [], []
    for batch in source.shard_batches(start, stop, batch_size, encoder.image_size):
        embeddings.append(encoder(batch.pixels))
        positions.append(batch.positions)
        labels.append(batch.labels)
        if progress is not None:
            progress.update(int(batch.positions[-1]) + 1)
    positions = np.concatenate(positions) if positions else np.zeros([0], np.int64)
    skipped = np.setdiff1d(np.arange(start, stop, dtype=np.int64), positions)
    if progress is not None:
        progress.update(stop)
    if not embeddings:  # every file of the shard was unreadable
        return Shard(np.zeros([0, encoder.dim], np.float32), positions, np.zeros([0], np.int64), skipped)
    return Shard(np.concatenate(embeddings), positions, np.concatenate(labels), skipped)


def finished_shards(parts_dir: str, num_shards: int) -> int:
    """Number of leading shards already on disk (a crash can only lose the one being written)."""
    done = 0
    while done < num_shards and os.path.exists(os.path.join(parts_dir, _SHARD_PATTERN.format(done))):
        done += 1
    return done


# ----------------------------------------------------------------------------------------------
# Final files.

def _write_npy(path: str, shards: List[str], count: int, dim: int) -> None:
    tmp = f"{path}.tmp"
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, dim))
    row = 0
    for shard_path in shards:
        with np.load(shard_path) as data:
            block = data["embeddings"]
        array[row:row + len(block)] = block
        row += len(block)
    array.flush()
    del array
    os.replace(tmp, path)


def _write_index(path: str, rows: List[Tuple[str, int]]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("row\tkey\tlabel\n")
        for row, (key, label) in enumerate(rows):
            f.write(f"{row}\t{key.translate(_TSV_ESCAPES)}\t{label}\n")
    os.replace(tmp, path)


def _write_tfrecord(path: str, shards: List[str], rows: List[Tuple[str, int]]) -> None:
    tmp = f"{path}.tmp"
    row = 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for shard_path in shards:
            with np.load(shard_path) as data:
                block = data["embeddings"]
            for vector in block:
                key, label = rows[row]
                example = tf.train.Example(features=tf.train.Features(feature={
                    "key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode("utf-8")])),
                    "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    "embedding": tf.train.Feature(float_list=tf.train.FloatList(value=vector.tolist())),
                }))
                writer.write(example.SerializeToString())
                row += 1
    os.replace(tmp, path)


def parse_tfrecord_example(serialized: tf.Tensor, dim: int) -> Dict[str, tf.Tensor]:
    """Parses one record of a ``tfrecord`` output: key, row, label, embedding float32 `[dim]`."""
    return tf.io.parse_single_example(serialized, {
        "key": tf.io.FixedLenFeature([], tf.string), "row": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64), "embedding": tf.io.FixedLenFeature([dim], tf.float32)})


def _assemble(paths: Dict[str, str], job: dict, source, dim: int, num_shards: int) -> dict:
    shard_paths = [os.path.join(paths["parts"], _SHARD_PATTERN.format(i)) for i in range(num_shards)]
    rows, skipped = [], []
    for shard_path in shard_paths:
        with np.load(shard_path) as data:
            rows.extend((source.key(int(p)), int(l)) for p, l in zip(data["positions"], data["labels"]))
            skipped.extend(source.key(int(p)) for p in data["skipped"])
    count = len(rows)
    if count == 0:
        raise ValueError(f"none of the {source.num_positions} image files could be decoded "
                         f"(e.g. {skipped[:_MAX_NAMES_IN_WARNING]}); nothing to write")
    files = {"embeddings": os.path.basename(paths["output"])}
    if job["format"] == "npy":
        _write_npy(paths["output"], shard_paths, count, dim)
        _write_index(paths["index"], rows)
        files["index"] = os.path.basename(paths["index"])
    else:
        _write_tfrecord(paths["output"], shard_paths, rows)
    manifest = {
        "complete": True, "job": job, "format": job["format"], "files": files, "count": count, "dim": dim,
        "encoder": job["encoder"]["path"], "images": job["images"].get("path") or job["images"]["spec"],
        "image_size": job["image_size"], "class_names": source.class_names,
        "skipped_count": len(skipped), "skipped": skipped,
    }
    _atomic_write_json(paths["manifest"], manifest)
    shutil.rmtree(paths["parts"])
    return manifest


# ----------------------------------------------------------------------------------------------
# The job.

def _check_args(output: str, output_format: str, batch_size: int, shard_batches: int) -> None:
    if not output:
        raise ValueError("--output is required: the embeddings file to write, e.g. embeddings.npy")
    if os.path.isdir(output):
        raise ValueError(f"--output {output!r} is a directory; give a file name such as "
                         f"{os.path.join(output, 'embeddings.npy')}")
    if output_format not in FORMATS:
        raise ValueError(f"--format {output_format!r} is not supported: choose one of {list(FORMATS)}")
    for name, value in (("batch_size", batch_size), ("shard_batches", shard_batches)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"--{name} must be a positive integer, got {value!r}")


def default_format(output: str) -> str:
    """``tfrecord`` for outputs named ``*.tfrecord`` / ``*.tfrecords`` / ``*.tfrec``, else ``npy``."""
    return "tfrecord" if output.lower().endswith((".tfrecord", ".tfrecords", ".tfrec")) else "npy"


def _describe_mismatch(recorded: dict, job: dict) -> str:
    names = {"encoder": "encoder", "images": "images", "format": "format", "batch_size": "batch size",
             "shard_size": "shard size", "image_size": "image size"}
    differ = [label for key, label in names.items() if recorded.get(key) != job.get(key)]
    if not differ and recorded != job:
        differ = ["settings"]
    return ", ".join(differ)


def _remove_outputs(paths: Dict[str, str]) -> None:
    for key in ("output", "index", "manifest"):
        if os.path.exists(paths[key]):
            os.remove(paths[key])
    if os.path.isdir(paths["parts"]):
        shutil.rmtree(paths["parts"])


def _existing_output(paths: Dict[str, str], job: dict, overwrite: bool) -> Optional[dict]:
    """Checks what is already at the output: the manifest of an identical finished job, or None.

    Raises:
        ValueError: the output (finished or not) belongs to a different job, or is a file that
            tfssl-embed did not write; `overwrite` removes them instead.
    """
    if overwrite:
        _remove_outputs(paths)
        return None
    again = "choose another --output or pass --overwrite"
    if os.path.exists(paths["manifest"]):
        manifest = _read_json(paths["manifest"])
        if manifest.get("job") != job:
            differ = _describe_mismatch(manifest.get("job") or {}, job)
            raise ValueError(f"{paths['output']} already holds embeddings of a different job "
                             f"({differ} differ); {again}")
        if os.path.isdir(paths["parts"]):
            shutil.rmtree(paths["parts"])  # the previous run stopped between the manifest and clean-up
        return manifest
    job_file = os.path.join(paths["parts"], _JOB_FILE)
    if os.path.exists(job_file):
        differ = _describe_mismatch(_read_json(job_file), job)
        if differ:
            raise ValueError(f"{paths['parts']} holds an unfinished run of a different job "
                             f"({differ} differ); rerun it with its own flags, {again}")
    elif os.path.exists(paths["output"]):
        raise ValueError(f"{paths['output']} exists and was not written by tfssl-embed "
                         f"(no {os.path.basename(paths['manifest'])}); {again}")
    return None


def embed_images(encoder: str, images: str, output: str, batch_size: int = 256,
                 output_format: Optional[str] = None, data_dir: Optional[str] = None, overwrite: bool = False,
                 shard_batches: int = 16, verbose: int = 1, stop_after_shards: Optional[int] = None) -> dict:
    """Embeds every image of `images` with the exported `encoder` into `output` (resumable).

    Args:
        encoder: export directory (model dir or version dir of `tfssl-export`).
        images: an image folder, ``fashion_mnist:SPLIT`` or ``tfds:NAME:SPLIT``.
        output: embeddings file; ``.index.tsv``, ``.manifest.json`` and ``.parts/`` go beside it.
        batch_size: images per signature call.
        output_format: ``"npy"`` or ``"tfrecord"``; None -> from the output's extension (`default_format`).
        data_dir: fashion_mnist IDX folder or TFDS data directory (dataset sources only).
        overwrite: discard an existing or mismatched output (or unfinished parts) and recompute.
        shard_batches: batches per resumable shard (shard = shard_batches * batch_size positions).
        verbose: 1 shows a `keras.utils.Progbar` over input positions and status lines.
        stop_after_shards: stop after computing this many shards in this call, leaving the parts for a
            later call to resume (used to simulate an interruption).

    Returns:
        The manifest dict plus ``status`` ("complete", "already_complete" or "stopped"),
        ``resumed_from_shard``, ``num_shards`` and ``paths``.

    Raises:
        ValueError / FileNotFoundError: bad arguments, missing encoder, empty folder, or an existing
            output made by a different job (without `overwrite`); all one line.
    """
    output_format = output_format or default_format(output or "")
    _check_args(output, output_format, batch_size, shard_batches)
    output = os.path.abspath(output)
    paths = output_paths(output)
    version_dir, metadata = resolve_export(encoder)
    source = open_source(images, data_dir)
    shard_size = int(shard_batches) * int(batch_size)
    job = {"encoder": {"path": version_dir, "sha256": export_fingerprint(version_dir)},
           "images": source.description(), "format": output_format, "batch_size": int(batch_size),
           "shard_size": shard_size, "image_size": int(metadata["image_size"])}
    num_shards = math.ceil(source.num_positions / shard_size)
    say = print if verbose else (lambda *a, **k: None)

    finished = _existing_output(paths, job, overwrite)
    if finished is not None:
        say(f"{output} is already complete ({finished['count']} embeddings); nothing recomputed "
            "(pass --overwrite to recompute)")
        return {**finished, "status": "already_complete", "resumed_from_shard": num_shards,
                "num_shards": num_shards, "paths": paths}

    os.makedirs(paths["parts"], exist_ok=True)
    for stale in glob.glob(os.path.join(paths["parts"], "*.tmp")):
        os.remove(stale)  # a shard that was being written when the previous run died
    _atomic_write_json(os.path.join(paths["parts"], _JOB_FILE), job)
    done = finished_shards(paths["parts"], num_shards)
    if done:
        say(f"Resuming {output}: {done} of {num_shards} shards already done")

    result_extra = {"resumed_from_shard": done, "num_shards": num_shards, "paths": paths}
    if done < num_shards:
        serving = load_serving_encoder(version_dir, metadata["image_size"], job["encoder"]["sha256"])
        dim = serving.dim
        progress = keras.utils.Progbar(source.num_positions, verbose=1 if verbose else 0, unit_name="image")
        if done:
            progress.update(done * shard_size)
        computed = 0
        for index in range(done, num_shards):
            if stop_after_shards is not None and computed >= stop_after_shards:
                return {"status": "stopped", "job": job, **result_extra}
            start, stop = index * shard_size, min((index + 1) * shard_size, source.num_positions)
            shard = compute_shard(serving, source, start, stop, batch_size, progress)
            shard.save(os.path.join(paths["parts"], _SHARD_PATTERN.format(index)))
            computed += 1
    else:
        # Every shard survived and only the final assembly was interrupted: no model needed.
        with np.load(os.path.join(paths["parts"], _SHARD_PATTERN.format(0))) as data:
            dim = int(data["embeddings"].shape[1])

    manifest = _assemble(paths, job, source, dim, num_shards)
    if manifest["skipped_count"]:
        logging.warning("tfssl-embed: skipped %d unreadable image file(s) of %d, e.g. %s (all listed in %s)",
                        manifest["skipped_count"], source.num_positions,
                        manifest["skipped"][:_MAX_NAMES_IN_WARNING], paths["manifest"])
    return {**manifest, "status": "complete", **result_extra}
