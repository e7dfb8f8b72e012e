"""tfssl.report.html / tfssl-report: one self-contained page with the run's pictures, flags and numbers."""
import base64
import csv
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from tfssl.config import TrainConfig
from tfssl.report import html as report_html

matplotlib_image = pytest.importorskip("matplotlib.image")

ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}


def accuracies(base):
    return {"linear": {"val_accuracy": base, "test_accuracy": base - 0.01},
            "knn": {"val_accuracy": base - 0.02, "test_accuracy": base - 0.03, "k": 200, "temperature": 0.1}}


def make_run(root, name, base=0.8512, with_result=True, supervised=False, method="simclr"):
    """A fake run directory: flags.json, metrics.csv, timing.json, eval/result.json, one picture."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    model_dir = os.path.join(root, name)
    os.makedirs(os.path.join(model_dir, "pictures"))
    config = TrainConfig(model_dir=model_dir, method=method, batch_size=96, width_multiplier=0.25,
                         method_options={"temperature": 0.5})
    with open(os.path.join(model_dir, "flags.json"), "w") as f:
        f.write(config.to_json())
    with open(os.path.join(model_dir, "metrics.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "epoch", "learning_rate", "loss", "probe_acc", "elapsed_s"])
        for step in range(1, 11):
            writer.writerow([step * 5, 0, 0.1 * step, 5 - 0.3 * step, 0.1 * step, step])
    with open(os.path.join(model_dir, "timing.json"), "w") as f:
        json.dump({"seconds": 600.0, "segments": 2, "peak_rss_mib": 1234.5, "step": 50}, f)
    if with_result:
        result = {"source": f"{model_dir}/checkpoints/ckpt-50", "dataset": "fashion_mnist",
                  "encoder": {**accuracies(base), "feature_dim": 128, "num_examples": {"train": 10, "val": 5,
                                                                                       "test": 5}},
                  "random_init": accuracies(0.7788), "raw_pixels": accuracies(0.8401)}
        if supervised:
            result["supervised"] = accuracies(0.9123)
        os.makedirs(os.path.join(model_dir, "eval"))
        with open(os.path.join(model_dir, "eval", "result.json"), "w") as f:
            json.dump(result, f)
    fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
    ax.imshow(np.random.default_rng(0).random((8, 8)))
    fig.savefig(os.path.join(model_dir, "pictures", "augmentations.png"))
    plt.close(fig)
    return model_dir


class Page(HTMLParser):
    """Images, tables (as lists of rows of cell texts) and external references of an HTML page."""

    def __init__(self, text):
        super().__init__()
        self.images, self.tables, self.links, self.scripts = [], [], [], 0
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "table":
            self.tables.append({"class": attrs.get("class"), "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "script":
            self.scripts += 1
        elif tag == "link" or (tag == "a" and not attrs.get("href", "#").startswith("#")):
            self.links.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table(self, cls):
        (table,) = [t["rows"] for t in self.tables if t["class"] == cls]
        return table


def decode(src):
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return matplotlib_image.imread(io.BytesIO(base64.b64decode(src[len(prefix):])), format="png")


def test_one_run_page_has_pictures_numbers_and_flags(tmp_path):
    run = make_run(str(tmp_path), "simclr_a", supervised=True)
    out = report_html.build_report([run], output=str(tmp_path / "out" / "report.html"))
    text = open(out, encoding="utf-8").read()
    page = Page(text)
    assert page.scripts == 0 and page.links == []  # self-contained: nothing to fetch
    # The saved augmentation picture and the training curves, drawn now since none was saved.
    files = [img["data-file"] for img in page.images]
    assert files == ["training_curves.png", "augmentations.png"]
    for img in page.images:
        image = decode(img["src"])
        assert image.shape[0] > 50 and image.shape[1] > 50 and image[..., :3].std() > 0.01
    curves = decode(page.images[0]["src"])
    assert curves.shape[:2] == (720, 1200)  # loss, accuracy, lr panels
    assert not os.path.exists(os.path.join(run, "pictures", "training_curves.png"))  # the report writes nothing there
    with open(os.path.join(run, "pictures", "augmentations.png"), "rb") as f:
        assert base64.b64decode(page.images[1]["src"].split(",", 1)[1]) == f.read()
    # Results: every row of result.json, the numbers as percentages of its values.
    with open(os.path.join(run, "eval", "result.json")) as f:
        result = json.load(f)
    table = page.table("results")
    assert table[0] == ["", "linear val (%)", "linear test (%)", "kNN val (%)", "kNN test (%)"]
    labels = {"this run": "encoder", "random init": "random_init", "raw pixels": "raw_pixels",
              "supervised": "supervised"}
    assert [row[0] for row in table[1:]] == list(labels)
    for row in table[1:]:
        entry = result[labels[row[0]]]
        expected = [entry["linear"]["val_accuracy"], entry["linear"]["test_accuracy"],
                    entry["knn"]["val_accuracy"], entry["knn"]["test_accuracy"]]
        assert [float(cell) for cell in row[1:]] == pytest.approx([100 * v for v in expected], abs=0.006)
    assert table[1][1:] == ["85.12", "84.12", "83.12", "82.12"]
    # Flags: the saved ones and the method's resolved defaults.
    flags = dict(page.table("flags")[1:])
    assert flags["--batch_size"] == "96" and flags["--method"] == "simclr" and flags["--width_multiplier"] == "0.25"
    assert flags["--simclr_temperature"] == "0.5"
    assert flags["--simclr_proj_dim"] == "128"  # not in flags.json: the option's default
    assert "10.0 min over 2 segment(s)" in text and "1234.5 MiB" in text
    assert "comparison" not in [t["class"] for t in page.tables]


def test_several_runs_start_with_a_comparison(tmp_path):
    a = make_run(str(tmp_path), "a", base=0.8512)
    b = make_run(str(tmp_path), "b", base=0.7001, with_result=False)
    page = Page(open(report_html.build_report([a, b], output=str(tmp_path / "r.html"))).read())
    assert page.tables[0]["class"] == "comparison"
    rows = page.tables[0]["rows"]
    header = rows[0]
    assert [r[0] for r in rows[1:]] == ["a", "b"]
    row_a, row_b = (dict(zip(header, r)) for r in rows[1:])
    assert row_a["linear test (%)"] == "84.12" and row_a["kNN test (%)"] == "82.12"
    assert row_a["random init linear test (%)"] == "76.88" and row_a["raw pixels linear test (%)"] == "83.01"
    assert row_a["steps"] == "50" and row_a["train time (min)"] == "10.0" and row_a["method"] == "simclr"
    assert row_b["linear test (%)"] == "–"
    assert len(page.images) == 4
    assert "No result.json yet" in open(str(tmp_path / "r.html")).read()


def test_bad_model_dirs_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report_html.build_report([str(tmp_path / "nope")], output=str(tmp_path / "r.html"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        report_html.build_report([str(tmp_path / "empty")], output=str(tmp_path / "r.html"))
    with pytest.raises(ValueError, match="--model_dir is required"):
        report_html.build_report([], output=str(tmp_path / "r.html"))
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow  # a subprocess importing TensorFlow: 10-50 s on a busy 2-core machine
def test_cli_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tfssl.cli.report", f"--model_dir={tmp_path / 'nope'}",
                             f"--output={tmp_path / 'r.html'}"], capture_output=True, text=True, env=ENV,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"tfssl-report: error: --model_dir={tmp_path / 'nope'} does not exist"
    assert not (tmp_path / "r.html").exists()
