"""Evaluating an export never writes inside the directory a model server watches."""
import os

from tfssl.evaluation.run import export_eval_dir


def fake_saved_model(path):
    os.makedirs(os.path.join(path, "variables"))
    open(os.path.join(path, "saved_model.pb"), "wb").close()
    return str(path)


def test_serving_layout_goes_beside_the_model_dir(tmp_path):
    for version in (1, 2):
        fake_saved_model(tmp_path / "base" / "enc" / str(version))
    expected = os.path.join(str(tmp_path), "base", "enc_eval", "2")
    assert export_eval_dir(str(tmp_path / "base" / "enc")) == expected  # model dir -> newest version
    assert export_eval_dir(str(tmp_path / "base" / "enc" / "2")) == expected
    assert export_eval_dir(str(tmp_path / "base" / "enc" / "1")).endswith(os.path.join("enc_eval", "1"))


def test_plain_saved_model_dir_gets_a_sibling(tmp_path):
    path = fake_saved_model(tmp_path / "my_export")
    assert export_eval_dir(path) == path + "_eval"
