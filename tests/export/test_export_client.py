"""export/client.py against stand-in TF Serving servers (REST JSON and gRPC) that run the SavedModel."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export_helpers import MODEL_NAME, sample_images
from fake_serving import ModelHost, start_grpc_server, start_rest_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT = os.path.join(REPO, "export", "client.py")


def load_client():
    spec = importlib.util.spec_from_file_location("tfssl_serving_client", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """PNGs / JPEGs of several sizes in sub-folders, plus a non-image and an undecodable "JPEG"."""
    root = tmp_path_factory.mktemp("photos")
    (root / "cats").mkdir()
    (root / "dogs").mkdir()
    shapes = [(16, 16, 3), (20, 31, 3), (12, 12, 1), (16, 16, 4), (40, 24, 3)]
    for i, shape in enumerate(shapes):
        image = sample_images(20 + i, (1, *shape))[0]
        (root / ("cats" if i % 2 else "dogs") / f"img{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    for i in range(2):
        image = sample_images(30 + i, (1, 18, 22, 3))[0]
        (root / f"photo{i}.JPG").write_bytes(tf.io.encode_jpeg(image).numpy())
    (root / "cats" / "notes.jpg").write_bytes(b"this is text, not an image")
    (root / "dogs" / "broken.jpeg").write_bytes(b"\xff\xd8\xff" + os.urandom(200))
    (root / "readme.txt").write_text("ignored")
    return str(root)


@pytest.fixture(scope="module")
def host(loaded):
    return ModelHost({MODEL_NAME: {1: loaded}})


def expected_outputs(loaded, root, paths):
    blobs = [open(os.path.join(root, p), "rb").read() for p in paths]
    outputs = loaded.signatures["serve_image_bytes"](image_bytes=tf.constant(blobs))
    return {name: value.numpy() for name, value in outputs.items()}


def check_npz(path, loaded, root):
    with np.load(path) as data:
        paths = list(data["paths"])
        assert sorted(paths) == sorted(["cats/img1.png", "cats/img3.png", "dogs/img0.png", "dogs/img2.png",
                                        "dogs/img4.png", "photo0.JPG", "photo1.JPG"])
        assert sorted(data["skipped"]) == ["cats/notes.jpg", "dogs/broken.jpeg"]
        reasons = dict(zip(data["skipped"], data["skip_reasons"]))
        assert "not a JPEG or PNG" in reasons["cats/notes.jpg"]
        expected = expected_outputs(loaded, root, paths)
        assert sorted(expected) == sorted(k for k in data.files if k not in ("paths", "skipped", "skip_reasons"))
        for name, value in expected.items():
            # The client sends batches of 3, the reference one batch: oneDNN picks other float32 kernels per
            # batch shape (seen on an AVX2 EPYC: 1.4e-6 apart on values ~0.2), hence 1e-5, not 1e-6.
            np.testing.assert_allclose(data[name], value, rtol=1e-5, atol=1e-5)


def test_rest_client_writes_the_saved_models_embeddings(host, loaded, image_folder, tmp_path):
    server, url = start_rest_server(host)
    try:
        output = str(tmp_path / "emb.npz")
        # TensorFlow is made unimportable: the REST client needs only numpy and the standard library.
        code = ("import runpy, sys; sys.modules['tensorflow'] = None; "
                f"sys.argv = ['client.py'] + sys.argv[1:]; runpy.run_path({CLIENT!r}, run_name='__main__')")
        result = subprocess.run([sys.executable, "-c", code, f"--images={image_folder}", f"--output={output}",
                                 f"--rest={url}", f"--model_name={MODEL_NAME}", "--batch_size=3"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "7 images" in result.stdout and "skipped 2" in result.stdout
        check_npz(output, loaded, image_folder)
        bodies = [b for b in host.requests if b.get("signature_name") == "serve_image_bytes"]
        assert bodies and all("b64" in row for b in bodies for row in b["instances"])
        assert max(len(b["instances"]) for b in bodies) == 3

        missing = subprocess.run([sys.executable, CLIENT, f"--images={image_folder}", f"--output={output}x.npz",
                                  f"--rest={url}", "--model_name=nope"], capture_output=True, text=True, timeout=120)
        assert missing.returncode != 0 and "HTTP 404" in missing.stderr
    finally:
        server.shutdown()


def test_rest_columnar_and_single_output_formats(host, loaded):
    """The stand-in speaks both request formats; the client's parser handles a single unnamed output."""
    client = load_client()
    columns = client._rows_to_columns([[1.0, 2.0], [3.0, 4.0]])
    assert list(columns) == ["embedding"] and columns["embedding"].shape == (2, 2)
    image = sample_images(40, (1, 16, 16, 3))
    reply = host.rest_predict(MODEL_NAME, None, {"inputs": {"images": image.tolist()}})
    expected = loaded.signatures["serving_default"](images=tf.constant(image, tf.float32))["embedding"].numpy()
    np.testing.assert_allclose(np.array(reply["outputs"]["embedding"]), expected, rtol=1e-6, atol=1e-6)


def test_client_aborts_on_a_request_error_that_is_not_about_images(image_folder):
    client = load_client()

    class WrongSignature:
        def predict(self, blobs):
            raise client.RequestRejected('Serving signature name: "nope" not found in signature def')

    with pytest.raises(client.ServerError, match="not found in signature def"):
        client.embed_files(WrongSignature(), image_folder, client.list_images(image_folder), 4, log=lambda _: None)


def test_grpc_client_writes_the_saved_models_embeddings(host, loaded, image_folder, tmp_path):
    server, address = start_grpc_server(host)
    try:
        output = str(tmp_path / "emb_grpc.npz")
        client = load_client()
        assert client.main([f"--images={image_folder}", f"--output={output}", f"--grpc={address}",
                            f"--model_name={MODEL_NAME}", "--version=1", "--batch_size=4"]) == 0
        check_npz(output, loaded, image_folder)
    finally:
        server.stop(0)


def test_example_models_config_parses_as_model_server_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(REPO, "export", "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "tfssl_encoder" and model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 2
    with open(os.path.join(REPO, "export", "README.md")) as f:
        readme = f.read()
    assert "tensorflow_model_server \\\n  --port=8500 \\\n  --rest_api_port=8501" in readme
