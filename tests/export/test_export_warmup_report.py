"""Warm-up records parse as PredictionLogs the signatures accept; the report matches saved_model_cli."""
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from export_helpers import MODEL_NAME

SIGNATURES = {"serving_default", "serve_uint8", "serve_image_bytes", "serve_model_input"}


def test_warmup_records_are_predict_requests_the_model_accepts(exported, loaded):
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(exported, "assets.extra", "tf_serving_warmup_requests")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert 0 < len(records) <= 1000  # TF Serving reads at most 1000 warm-up records
    seen = set()
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == MODEL_NAME
        signature = loaded.signatures[request.model_spec.signature_name]
        inputs = {key: tf.constant(tf.make_ndarray(proto)) for key, proto in request.inputs.items()}
        # The request must match the signature's input names and dtypes exactly, as TF Serving checks.
        expected = signature.structured_input_signature[1]
        assert set(inputs) == set(expected)
        for key, spec in expected.items():
            assert inputs[key].dtype == spec.dtype and spec.shape.is_compatible_with(inputs[key].shape)
        outputs = signature(**inputs)
        batch = next(iter(inputs.values())).shape[0]
        assert outputs["embedding"].shape == (batch, 64)
        assert np.isfinite(outputs["embedding"].numpy()).all()
        seen.add(request.model_spec.signature_name)
    assert seen == SIGNATURES


def test_signature_report_matches_saved_model_cli(exported):
    from tfssl.export import signature_report

    report = signature_report(os.path.dirname(exported))  # model dir -> highest version
    assert report.startswith(f"tfssl export: {exported}")
    assert "output embedding: float32 (-1, 64)" in report and "output block3: float32 (-1, 4, 4, 32)" in report
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--all", "--dir", exported], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    # Each signature block of the report appears verbatim in saved_model_cli's own output.
    blocks = report.split("\nsignature_def[")[1:]
    names = {block.split("'")[1] for block in blocks}
    assert SIGNATURES <= names
    for block in blocks:
        text = "signature_def[" + block.split("\n\n")[0].rstrip("\n")
        assert text in result.stdout, text[:200]
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in result.stdout
