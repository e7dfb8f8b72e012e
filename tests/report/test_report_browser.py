"""The report in a real browser (Debian's headless chromium): every image decodes, the tables render."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from tfssl.report import html as report_html

from test_report_html import make_run  # noqa: E402  (tests/report is on sys.path: rootdir-style imports)

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")

# Appended to a copy of the page: after load, each image records whether the browser decoded it, and the
# body records how many table rows it laid out.
CHECK = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-natural", img.complete && img.naturalWidth > 0 ? img.naturalWidth + "x" +
                     img.naturalHeight : "broken");
  }
  document.body.setAttribute("data-rows", document.querySelectorAll("table tr").length);
  document.body.setAttribute("data-checked", "yes");
});
</script>"""


def chromium(*args, timeout=120):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=timeout)


def loaded_dom(page_path, tmp_path):
    text = open(page_path, encoding="utf-8").read()
    probe = tmp_path / (os.path.basename(page_path) + ".probe.html")
    probe.write_text(text.replace("</body>", CHECK + "\n</body>"), encoding="utf-8")
    result = chromium("--dump-dom", f"file://{probe}")
    assert 'data-checked="yes"' in result.stdout, result.stderr[-2000:]
    return result.stdout


def test_report_renders_its_images_and_tables_in_chromium(tmp_path):
    run_a = make_run(str(tmp_path), "run_a", supervised=True)
    run_b = make_run(str(tmp_path), "run_b", base=0.7001)
    page = report_html.build_report([run_a, run_b], output=str(tmp_path / "report.html"))
    dom = loaded_dom(page, tmp_path)
    natural = re.findall(r'data-natural="([^"]+)"', dom)
    assert len(natural) == 4 and "broken" not in natural, natural
    assert "1200x720" in natural  # the training curves, at their size
    rows = int(re.search(r'data-rows="(\d+)"', dom).group(1))
    assert rows >= 3 + 2 * 4  # comparison (header + 2) and two results tables (header + 3 or 4 rows) at least
    assert "84.12" in dom and "Comparison" in dom
    # The check can fail: a corrupted image is reported broken.
    bad = tmp_path / "bad.html"
    text = open(page, encoding="utf-8").read()
    bad.write_text(text.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAAA", 1), encoding="utf-8")
    assert "broken" in re.findall(r'data-natural="([^"]+)"', loaded_dom(str(bad), tmp_path))


@pytest.mark.slow  # a second chromium start plus a 1280x2400 screenshot: 15-60 s on a busy machine
def test_report_screenshot_shows_pictures(tmp_path):
    import matplotlib.image

    run = make_run(str(tmp_path), "run_a")
    page = report_html.build_report([run], output=str(tmp_path / "report.html"))
    shot = tmp_path / "shot.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1280,2400", f"file://{page}")
    assert shot.exists(), result.stderr[-2000:]
    image = matplotlib.image.imread(str(shot))[..., :3]
    assert image.shape[:2] == (2400, 1280)
    # The training-curve figure draws coloured lines (matplotlib's blue / orange); text and borders are grey.
    colour = image.max(axis=2) - image.min(axis=2)
    assert (colour > 0.3).sum() > 500
    assert np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0).shape[0] > 50
    if os.environ.get("TFSSL_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["TFSSL_KEEP_SCREENSHOT"])
