"""tfssl-embed: folder with corrupt files, equality with the in-memory encoder, resume, mismatch, CLI.

References are computed independently of tfssl.embed: PNG pixels are the arrays the test wrote
(PNG is lossless), JPEGs are decoded with tf.io.decode_jpeg, channel conversion / central crop are
numpy, and the Keras encoder is called directly on the [0, 1] images.
"""
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfssl import embed as embed_lib
from tfssl.encoders import build_encoder
from tfssl.export import export_encoder

IMAGE_SIZE = 16
# Images already 16 x 16 reach the encoder untouched: SavedModel vs in-memory Keras on the same
# float32 input differ by float rounding only (observed ~1e-6 on features of magnitude ~0.1-4).
ATOL, RTOL = 1e-4, 1e-4
# Resized images are rounded to 8 bits (the export's raw-pixel contract); a resized value within an
# ulp of x.5 may round the other way in the reference, i.e. a few pixels differ by 1/255, which moves
# features by up to ~0.3% (observed 4e-3 on features ~3).
RESIZED_ATOL, RESIZED_RTOL = 2e-2, 1e-2
RESIZED = ("sizes/small.png", "sizes/wide.png")
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def _export(encoder, base):
    """A versioned export (<base>/tfssl_encoder/1/); returns the version dir."""
    return export_encoder(encoder, str(base), IMAGE_SIZE)


@pytest.fixture(scope="module")
def encoder():
    keras.utils.set_random_seed(0)
    return build_encoder("resnet18", IMAGE_SIZE, width_multiplier=0.125)


@pytest.fixture(scope="module")
def export_path(encoder, tmp_path_factory):
    return _export(encoder, tmp_path_factory.mktemp("export") / "enc")


@pytest.fixture(scope="module")
def other_export_path(export_path, tmp_path_factory):
    """The same model at another path: a different --encoder as far as a re-run is concerned."""
    other = str(tmp_path_factory.mktemp("export_other") / "copy")
    shutil.copytree(export_path, other)
    return other


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """20 readable images (RGB / gray / RGBA PNG, JPEG, other sizes) + 2 corrupt files + ignored files.

    Returns (root, {relative path: decoded uint8 [H, W, C]} of the good files, sorted bad names).
    """
    root = str(tmp_path_factory.mktemp("images"))
    rng = np.random.default_rng(0)
    good = {}

    def png(rel, shape):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        _write(os.path.join(root, rel), tf.io.encode_png(pixels).numpy())
        good[rel] = pixels

    for i in range(8):
        png(f"cats/c{i:02d}.png", (16, 16, 3))
    for i in range(4):
        png(f"dogs/deep/d{i}.png", (16, 16, 3))
    for i in range(3):
        png(f"gray/g{i}.png", (16, 16, 1))
    png("rgba.PNG", (16, 16, 4))
    png("sizes/wide.png", (20, 24, 3))   # non-square and larger: central crop + downscale
    png("sizes/small.png", (10, 12, 3))  # smaller: central crop + upscale
    for i in range(2):
        data = tf.io.encode_jpeg(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), quality=90).numpy()
        _write(os.path.join(root, f"jpeg/j{i}.jpg"), data)
        good[f"jpeg/j{i}.jpg"] = tf.io.decode_jpeg(data).numpy()
    # Corrupt: random bytes under an image name, and a JPEG cut in half.
    _write(os.path.join(root, "dogs/broken.png"), rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).numpy()
    _write(os.path.join(root, "jpeg/truncated.jpg"), jpeg[: len(jpeg) // 2])
    # Not images to tfssl-embed: other extension, hidden file, hidden folder.
    _write(os.path.join(root, "notes.txt"), b"not an image")
    _write(os.path.join(root, ".hidden.png"), tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)).numpy())
    _write(os.path.join(root, ".cache/x.png"), tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)).numpy())
    assert len(good) == 20
    return root, good, sorted(["dogs/broken.png", "jpeg/truncated.jpg"])


def _reference_input(pixels):
    """uint8 [H, W, C] -> float [S, S, 3] in [0, 1]: RGB, central square crop, resize, 8-bit rounding."""
    rgb = np.repeat(pixels[..., :1], 3, axis=-1) if pixels.shape[-1] in (1, 2) else pixels[..., :3]
    height, width = rgb.shape[:2]
    if (height, width) == (IMAGE_SIZE, IMAGE_SIZE):
        return rgb.astype(np.float32) / 255.0
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top:top + side, left:left + side].astype(np.float32) / 255.0
    resized = tf.image.resize(square, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear", antialias=True).numpy()
    return np.round(np.clip(resized, 0.0, 1.0) * 255.0) / 255.0


def _direct_embeddings(encoder, images):
    batch = np.stack([_reference_input(image) for image in images]).astype(np.float32)
    return encoder(batch, training=False).numpy()


def _read_index(path):
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0] == "row\tkey\tlabel"
    rows = [line.split("\t") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    return [r[1] for r in rows], np.array([int(r[2]) for r in rows])


def test_model_pixels_converts_channels_and_center_resizes():
    rng = np.random.default_rng(3)
    for shape in [(16, 16, 3), (16, 16, 1), (16, 16, 4), (16, 16, 2), (20, 24, 3), (10, 12, 3), (40, 17, 1)]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        got = embed_lib.model_pixels(tf.constant(pixels), IMAGE_SIZE).numpy()
        want = np.round(_reference_input(pixels) * 255.0)
        assert got.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and got.dtype == np.uint8
        if shape[:2] == (IMAGE_SIZE, IMAGE_SIZE):
            np.testing.assert_array_equal(got, want)  # untouched apart from the channel conversion
        else:
            diff = np.abs(got.astype(np.int64) - want)
            assert diff.max() <= 1 and np.mean(diff == 0) > 0.95, shape


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _run(export_path, images, output, **kwargs):
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("shard_batches", 1)
    return embed_lib.embed_images(export_path, images, str(output), verbose=0, **kwargs)


@pytest.fixture(scope="module")
def folder_run(export_path, image_folder, tmp_path_factory):
    """An uninterrupted npy run over the image folder: (result, output path)."""
    output = tmp_path_factory.mktemp("full") / "emb.npy"
    return _run(export_path, image_folder[0], output), str(output)


def test_folder_with_corrupt_files_embeds_every_good_file(encoder, image_folder, folder_run):
    _, good, bad = image_folder
    result, output = folder_run
    assert result["status"] == "complete" and result["num_shards"] == 6  # 22 candidate files, 4 per shard
    keys, labels = _read_index(output + ".index.tsv")
    assert keys == sorted(good), "one index row per readable file, in sorted relative-path order"
    assert np.all(labels == -1)
    with open(output + ".manifest.json") as f:
        manifest = json.load(f)
    assert manifest["skipped"] == bad and manifest["skipped_count"] == 2
    assert manifest["count"] == 20 and manifest["dim"] == encoder.output.shape[-1] == 64
    assert not os.path.exists(output + ".parts"), "work files are removed once complete"

    embeddings = np.load(output)
    assert embeddings.shape == (20, 64) and embeddings.dtype == np.float32
    expected = _direct_embeddings(encoder, [good[key] for key in keys])
    native = [i for i, key in enumerate(keys) if key not in RESIZED]
    resized = [keys.index(key) for key in RESIZED]
    np.testing.assert_allclose(embeddings[native], expected[native], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(embeddings[resized], expected[resized], atol=RESIZED_ATOL, rtol=RESIZED_RTOL)
    # Rows are not interchangeable: the comparison would fail for a shuffled index.
    assert np.abs(embeddings[0] - expected[1]).max() > 100 * ATOL


def test_resume_after_interruption_is_identical_to_an_uninterrupted_run(export_path, image_folder, folder_run,
                                                                       tmp_path, monkeypatch, caplog):
    root, full = image_folder[0], folder_run[1]
    target = tmp_path / "emb.npy"
    stopped = _run(export_path, root, target, stop_after_shards=2)
    assert stopped["status"] == "stopped"
    parts = tmp_path / "emb.npy.parts"
    shards = sorted(p for p in os.listdir(parts) if p.startswith("shard-"))
    assert shards == ["shard-000000.npz", "shard-000001.npz"]
    assert not os.path.exists(target) and not os.path.exists(str(target) + ".manifest.json")
    _write(str(parts / "shard-000002.npz.tmp"), b"half-written shard of the killed run")

    computed = []
    original = embed_lib.compute_shard

    def recording(encoder, source, start, stop, *args, **kwargs):
        computed.append(start)
        return original(encoder, source, start, stop, *args, **kwargs)

    monkeypatch.setattr(embed_lib, "compute_shard", recording)
    with caplog.at_level(logging.WARNING):
        resumed = _run(export_path, root, target)
    assert resumed["status"] == "complete" and resumed["resumed_from_shard"] == 2
    assert computed == [8, 12, 16, 20], "only the shards missing after the interruption are computed"
    assert any("skipped 2 unreadable" in r.getMessage() for r in caplog.records)
    for suffix in ("", ".index.tsv", ".manifest.json"):
        assert _read_bytes(str(target) + suffix) == _read_bytes(full + suffix), suffix

    again = _run(export_path, root, target)
    assert again["status"] == "already_complete" and again["count"] == 20
    assert computed == [8, 12, 16, 20], "a complete output is not recomputed"


def test_interrupted_final_assembly_is_finished_without_recomputing(export_path, image_folder, folder_run,
                                                                    tmp_path, monkeypatch):
    target = str(tmp_path / "emb.npy")
    original = embed_lib._assemble

    def dies_half_way(paths, *args):
        with open(paths["output"], "wb") as f:
            f.write(b"half of the final file")
        raise KeyboardInterrupt

    monkeypatch.setattr(embed_lib, "_assemble", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        _run(export_path, image_folder[0], target)
    monkeypatch.setattr(embed_lib, "_assemble", original)
    monkeypatch.setattr(embed_lib, "compute_shard", None)  # any recomputation would fail loudly
    finished = _run(export_path, image_folder[0], target)
    assert finished["status"] == "complete" and finished["resumed_from_shard"] == finished["num_shards"] == 6
    for suffix in ("", ".index.tsv", ".manifest.json"):
        assert _read_bytes(target + suffix) == _read_bytes(folder_run[1] + suffix), suffix


def test_folder_where_nothing_decodes_is_an_error(export_path, tmp_path):
    _write(str(tmp_path / "imgs" / "a.png"), b"not a png")
    _write(str(tmp_path / "imgs" / "b.jpg"), b"not a jpeg")
    with pytest.raises(ValueError, match="none of the 2 image files could be decoded"):
        _run(export_path, str(tmp_path / "imgs"), tmp_path / "o.npy")


def test_index_escapes_tabs_and_newlines_in_file_names(export_path, tmp_path):
    pixels = tf.io.encode_png(np.full((16, 16, 3), 7, np.uint8)).numpy()
    for name in ("a\tb.png", "c\nd.png", "e\\f.png"):
        _write(str(tmp_path / "imgs" / name), pixels)
    _run(export_path, str(tmp_path / "imgs"), tmp_path / "o.npy")
    with open(tmp_path / "o.npy.index.tsv") as f:
        assert f.read() == "row\tkey\tlabel\n0\ta\\tb.png\t-1\n1\tc\\nd.png\t-1\n2\te\\\\f.png\t-1\n"


def _copy_outputs(output, directory):
    for suffix in ("", ".index.tsv", ".manifest.json"):
        shutil.copy(output + suffix, os.path.join(directory, os.path.basename(output) + suffix))
    return os.path.join(directory, os.path.basename(output))


def test_mismatched_rerun_is_refused_unless_overwrite(export_path, other_export_path, image_folder,
                                                      folder_run, tmp_path):
    root = image_folder[0]
    output = _copy_outputs(folder_run[1], str(tmp_path))
    with pytest.raises(ValueError, match=r"different job \(encoder differ\).*--overwrite") as error:
        _run(other_export_path, root, output)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"\(batch size differ\)"):
        _run(export_path, root, output, batch_size=2, shard_batches=2)  # same shard size

    # An unfinished run is protected the same way; here the folder changes under it.
    folder = tmp_path / "few"
    shutil.copytree(os.path.join(root, "cats"), folder)
    partial = tmp_path / "partial.npy"
    assert _run(export_path, str(folder), partial, stop_after_shards=1)["status"] == "stopped"
    _write(str(folder / "new.png"), tf.io.encode_png(np.zeros((16, 16, 3), np.uint8)).numpy())
    with pytest.raises(ValueError, match=r"unfinished run of a different job \(images differ\)"):
        _run(export_path, str(folder), partial)
    replaced = _run(export_path, str(folder), partial, overwrite=True)
    assert replaced["status"] == "complete" and replaced["resumed_from_shard"] == 0 and replaced["count"] == 9


@pytest.mark.parametrize("kwargs, message", [
    ({"encoder": "/nonexistent/export"}, "does not exist"),
    ({"images": "/nonexistent/folder"}, "neither an existing folder nor a dataset split"),
    ({"images": "fashion_mnist"}, "neither an existing folder"),
    ({"images": "tfds:"}, "tfds:NAME:SPLIT"),
    ({"images": "fashion_mnist:tset"}, "split"),
    ({"output_format": "parquet"}, "'parquet' is not supported"),
    ({"batch_size": 0}, "--batch_size must be a positive integer"),
    ({"shard_batches": -1}, "--shard_batches must be a positive integer"),
    ({"output": ""}, "--output is required"),
])
def test_user_mistakes_are_one_line_errors(export_path, image_folder, tmp_path, kwargs, message):
    args = {"encoder": export_path, "images": image_folder[0], "output": str(tmp_path / "o.npy"), **kwargs}
    encoder, images, output = args.pop("encoder"), args.pop("images"), args.pop("output")
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        embed_lib.embed_images(encoder, images, output, verbose=0, **args)
    assert "\n" not in str(error.value)


def test_empty_folder_non_export_and_foreign_output_are_refused(export_path, image_folder, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match="contains no .*jpg.* files"):
        _run(export_path, str(tmp_path / "empty"), tmp_path / "o.npy")
    with pytest.raises(FileNotFoundError, match="empty"):
        _run(str(tmp_path / "empty"), image_folder[0], tmp_path / "o.npy")
    (tmp_path / "foreign.npy").write_bytes(b"someone else's file")
    with pytest.raises(ValueError, match="not written by tfssl-embed"):
        _run(export_path, image_folder[0], tmp_path / "foreign.npy")
    assert (tmp_path / "foreign.npy").read_bytes() == b"someone else's file"


def test_tfrecord_output_matches_npy_output(export_path, image_folder, folder_run, tmp_path):
    record = _run(export_path, image_folder[0], tmp_path / "emb.tfrecord")
    assert record["format"] == "tfrecord" and record["count"] == 20
    assert not os.path.exists(tmp_path / "emb.tfrecord.index.tsv")
    records = tf.data.TFRecordDataset(str(tmp_path / "emb.tfrecord"))
    parsed = [embed_lib.parse_tfrecord_example(r, 64) for r in records]
    keys, labels = _read_index(folder_run[1] + ".index.tsv")
    assert [p["key"].numpy().decode() for p in parsed] == keys
    assert [int(p["row"]) for p in parsed] == list(range(len(keys)))
    assert [int(p["label"]) for p in parsed] == labels.tolist()
    np.testing.assert_array_equal(np.stack([p["embedding"].numpy() for p in parsed]), np.load(folder_run[1]))


def _idx(name, offset):
    with gzip.open(os.path.join(FASHION_DIR, name)) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


@pytest.fixture(scope="module")
def fashion_run(export_path, tmp_path_factory):
    if not os.path.isdir(FASHION_DIR):
        pytest.skip("local Fashion-MNIST IDX files not installed")
    output = tmp_path_factory.mktemp("fashion") / "fm.npy"
    return _run(export_path, "fashion_mnist:test[:64]", output, batch_size=16), str(output)


def test_fashion_mnist_split_with_labels_and_resume(encoder, export_path, fashion_run, tmp_path):
    labels = _idx("t10k-labels-idx1-ubyte.gz", 8)[:64].astype(np.int64)
    images = _idx("t10k-images-idx3-ubyte.gz", 16)[: 64 * 28 * 28].reshape(64, 28, 28, 1)
    result, output = fashion_run
    keys, index_labels = _read_index(output + ".index.tsv")
    assert keys == [str(i) for i in range(64)]
    np.testing.assert_array_equal(index_labels, labels)
    assert result["class_names"] and len(result["class_names"]) == 10
    # 28 x 28 -> 16 x 16 goes through the 8-bit rounded resize: the resized tolerance applies.
    np.testing.assert_allclose(np.load(output), _direct_embeddings(encoder, images),
                               atol=RESIZED_ATOL, rtol=RESIZED_RTOL)

    target = tmp_path / "fm.npy"
    assert _run(export_path, "fashion_mnist:test[:64]", target, batch_size=16,
                stop_after_shards=1)["status"] == "stopped"
    assert _run(export_path, "fashion_mnist:test[:64]", target, batch_size=16)["resumed_from_shard"] == 1
    for suffix in ("", ".index.tsv", ".manifest.json"):
        assert _read_bytes(str(target) + suffix) == _read_bytes(output + suffix), suffix


def _cli(*args, quiet=False):
    output = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "tfssl.cli.embed", *args], stdout=output, stderr=output,
                            text=True, env=ENV)


def _kill_after_first_shard(proc, parts):
    deadline = time.time() + 120
    while proc.poll() is None and not os.path.exists(os.path.join(parts, "shard-000000.npz")):
        assert time.time() < deadline, "no shard written within 120 s"
        time.sleep(0.005)
    proc.kill()  # SIGKILL: no clean-up code runs, only what is already on disk survives
    proc.wait()
    return proc.returncode


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="local Fashion-MNIST IDX files not installed")
def test_cli_run_sigkill_resume_and_one_line_errors(export_path, other_export_path, image_folder, folder_run,
                                                    fashion_run, tmp_path):
    """Three CLI processes at once (they mostly wait on the interpreter start-up): a mismatched rerun,
    a normal run from the model dir, and a run that is SIGKILLed after its first shard and resumed."""
    done = _copy_outputs(folder_run[1], str(tmp_path))
    mismatch = _cli(f"--encoder={other_export_path}", f"--images={image_folder[0]}", f"--output={done}",
                    "--batch_size=4", "--shard_batches=1")
    # A versioned export is also found from its model dir (highest version).
    model_dir = os.path.dirname(export_path) if os.path.basename(export_path).isdigit() else export_path
    # --batch_size=16 and a shard of 4 batches: the same batches as the library run it is compared with.
    good = _cli(f"--encoder={model_dir}", "--images=fashion_mnist:test[:64]",
                f"--output={tmp_path / 'fm.npy'}", "--batch_size=16", "--shard_batches=4")
    # 128 shards: a kill right after the first one lands in the middle of the run.
    killed_images, killed_flags = "fashion_mnist:test[:512]", {"batch_size": 4, "shard_batches": 1}
    killed_output = tmp_path / "killed" / "fm.npy"
    killed = _cli(f"--encoder={export_path}", f"--images={killed_images}", f"--output={killed_output}",
                  "--batch_size=4", "--shard_batches=1", quiet=True)

    returncode = _kill_after_first_shard(killed, str(killed_output) + ".parts")
    _, stderr = mismatch.communicate(timeout=120)
    assert mismatch.returncode == 2, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfssl-embed: error: "), stderr
    assert "encoder differ" in lines[0]
    stdout, stderr = good.communicate(timeout=120)
    assert good.returncode == 0, stderr[-2000:]
    assert "Wrote 64 embeddings of dimension 64" in stdout
    np.testing.assert_allclose(np.load(tmp_path / "fm.npy"), np.load(fashion_run[1]), atol=1e-6)
    assert _read_bytes(str(tmp_path / "fm.npy.index.tsv")) == _read_bytes(fashion_run[1] + ".index.tsv")

    if returncode == 0:
        pytest.skip("the run to kill finished before it could be killed")
    assert not killed_output.exists(), "no final output from a killed run"
    resumed = _run(export_path, killed_images, killed_output, **killed_flags)
    assert 1 <= resumed["resumed_from_shard"] < resumed["num_shards"] == 128
    reference = _run(export_path, killed_images, tmp_path / "ref.npy", **killed_flags)
    assert reference["resumed_from_shard"] == 0
    assert _read_bytes(killed_output) == _read_bytes(tmp_path / "ref.npy")
    assert _read_bytes(str(killed_output) + ".index.tsv") == _read_bytes(str(tmp_path / "ref.npy.index.tsv"))
