"""TF Serving layout: version numbering, resolving, and no partial version ever visible."""
import os
import threading
import time

import pytest

from tfssl.export import layout


def fake_version(model_dir, name, complete=True):
    path = os.path.join(model_dir, name)
    os.makedirs(os.path.join(path, "variables"))
    if complete:
        open(os.path.join(path, "saved_model.pb"), "wb").close()
    return path


def test_next_version_and_resolve(tmp_path):
    model_dir = str(tmp_path / "base" / "m")
    assert layout.next_version(model_dir) == 1 and layout.list_versions(model_dir) == []
    fake_version(model_dir, "1")
    fake_version(model_dir, "3")
    fake_version(model_dir, "7", complete=False)  # not a SavedModel: never resolved to, but its number is taken
    os.makedirs(os.path.join(model_dir, ".tmp-abc"))
    assert layout.list_versions(model_dir) == [1, 3]
    assert layout.next_version(model_dir) == 8
    assert layout.resolve_version_dir(model_dir) == os.path.join(model_dir, "3")
    assert layout.resolve_version_dir(os.path.join(model_dir, "1")) == os.path.join(model_dir, "1")
    with pytest.raises(FileNotFoundError, match="export base holding models"):
        layout.resolve_version_dir(str(tmp_path / "base"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        layout.resolve_version_dir(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="holds no SavedModel"):
        layout.resolve_version_dir(os.path.join(model_dir, "7"))


def test_publish_explicit_version_refuses_existing(tmp_path):
    model_dir = str(tmp_path / "m")
    fake_version(model_dir, "2")
    tmp = layout.new_temp_dir(model_dir)
    open(os.path.join(tmp, "saved_model.pb"), "wb").close()
    with pytest.raises(ValueError, match="already exists"):
        layout.publish_version(tmp, model_dir, version=2)
    assert layout.publish_version(tmp, model_dir, version=5) == os.path.join(model_dir, "5")
    with pytest.raises(ValueError, match="positive integer"):
        layout.check_version(0)


def test_concurrent_publishers_get_distinct_versions(tmp_path):
    """Two writers choosing "the next version" at once: a taken number is skipped, never overwritten."""
    model_dir = str(tmp_path / "m")
    published = []

    def writer(tag):
        for i in range(15):
            tmp = layout.new_temp_dir(model_dir)
            fake_version(tmp, "variables_parent")  # some content
            with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
                f.write(f"{tag}-{i}")
            published.append(layout.publish_version(tmp, model_dir))

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(os.path.basename(p)) for p in published) == list(range(1, 31))
    contents = {open(os.path.join(p, "saved_model.pb")).read() for p in published}
    assert len(contents) == 30  # nobody's version was replaced by another's
    assert not [n for n in os.listdir(model_dir) if n.startswith(".tmp")]


def test_export_of_next_version_is_never_partially_visible(tiny_model, tmp_path):
    """A poller (like TF Serving's file-system source) never sees an incomplete integer version dir."""
    from export_helpers import IMAGE_SIZE
    from tfssl.export import export_encoder

    encoder, _ = tiny_model
    base, name = str(tmp_path / "serving"), "enc"
    model_dir = os.path.join(base, name)
    fake_version(model_dir, "1")
    os.makedirs(os.path.join(model_dir, "1", "variables"), exist_ok=True)
    open(os.path.join(model_dir, "1", "variables", "variables.index"), "wb").close()
    open(os.path.join(model_dir, "1", "marker"), "wb").close()
    problems, seen_tmp, polls, done = [], [], [0], threading.Event()

    def poll():
        while not done.is_set():
            for entry in os.listdir(model_dir):
                if entry.startswith(".tmp"):
                    seen_tmp.append(entry)
                elif entry.isdigit():
                    path = os.path.join(model_dir, entry)
                    for required in ("saved_model.pb", "variables/variables.index"):
                        if not os.path.exists(os.path.join(path, required)):
                            problems.append(f"{entry} without {required}")
            polls[0] += 1
            time.sleep(0.002)  # poll often, but leave the exporting thread the interpreter

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        version_dir = export_encoder(encoder, base, IMAGE_SIZE, model_name=name, warmup=False)
    finally:
        time.sleep(0.05)
        done.set()
        poller.join()
    assert version_dir == os.path.join(model_dir, "2")
    assert not problems, problems[:5]
    assert seen_tmp and polls[0] > 10, "the poller never overlapped the write: the test proved nothing"
    for required in ("saved_model.pb", "variables/variables.index", "assets.extra/tfssl_export.json",
                     "assets.extra/encoder.keras"):
        assert os.path.exists(os.path.join(version_dir, required))
    assert not os.path.exists(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests"))
    assert sorted(os.listdir(model_dir)) == ["1", "2"]
    with pytest.raises(ValueError, match="already exists"):
        export_encoder(encoder, base, IMAGE_SIZE, model_name=name, version=2)


def test_export_argument_errors(tiny_model, tmp_path):
    from tfssl.export import export_encoder

    encoder, _ = tiny_model
    with pytest.raises(ValueError, match="takes inputs"):
        export_encoder(encoder, str(tmp_path), 32)
    with pytest.raises(ValueError, match="not a layer of encoder"):
        export_encoder(encoder, str(tmp_path), 16, endpoints=["block9"])
    with pytest.raises(ValueError, match="model_name"):
        export_encoder(encoder, str(tmp_path), 16, model_name="a/b")
    with pytest.raises(ValueError, match="reserved"):
        export_encoder(encoder, str(tmp_path), 16, metadata={"image_size": 3})
    assert not os.listdir(tmp_path) or all(not n.startswith(".tmp") for n in os.listdir(tmp_path))
