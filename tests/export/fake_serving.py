"""Stand-ins for TF Serving's REST and gRPC Predict APIs, answering by running the SavedModel.

Only what a Predict call needs: POST /v1/models/<name>[/versions/<v>]:predict with a JSON body
{"signature_name", "instances" | "inputs"} (binary strings as {"b64": ...}), answered with
{"predictions": ...} (row format) or {"outputs": ...} (columnar), errors as HTTP 400/404 {"error": ...};
and PredictionService.Predict over gRPC with INVALID_ARGUMENT for bad inputs.
"""
import base64
import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?:predict$")


def _decode(value):
    """JSON value -> python value with {"b64": ...} objects turned into bytes."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _run(signature, inputs):
    specs = signature.structured_input_signature[1]
    tensors = {key: tf.constant(np.array(value, dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype),
                                dtype=spec.dtype) for key, value in inputs.items() for spec in [specs[key]]}
    return {key: value.numpy() for key, value in signature(**tensors).items()}


class ModelHost:
    """Holds loaded SavedModels by (name, version) and answers requests like TF Serving."""

    def __init__(self, models):
        """models: {name: {version: version_dir or loaded SavedModel}}; the highest version is the default."""
        self.models = {name: {v: tf.saved_model.load(m) if isinstance(m, str) else m for v, m in versions.items()}
                       for name, versions in models.items()}
        self.requests = []

    def signature(self, name, version, signature_name):
        if name not in self.models:
            raise LookupError(f"Servable not found for request: Latest({name})")
        versions = self.models[name]
        loaded = versions[int(version)] if version else versions[max(versions)]
        if signature_name not in loaded.signatures:
            raise KeyError(f"Serving signature name: \"{signature_name}\" not found in signature def")
        return loaded.signatures[signature_name]

    def rest_predict(self, name, version, body):
        self.requests.append(body)
        signature = self.signature(name, version, body.get("signature_name", "serving_default"))
        input_names = list(signature.structured_input_signature[1])
        if "instances" in body:
            rows = _decode(body["instances"])
            if len(input_names) == 1 and not (rows and isinstance(rows[0], dict) and input_names[0] in rows[0]):
                inputs = {input_names[0]: rows}
            else:
                inputs = {key: [row[key] for row in rows] for key in input_names}
            outputs = _run(signature, inputs)
            if len(outputs) == 1:
                return {"predictions": next(iter(outputs.values())).tolist()}
            n = len(next(iter(outputs.values())))
            return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]}
        columns = _decode(body["inputs"])
        inputs = columns if isinstance(columns, dict) else {input_names[0]: columns}
        outputs = _run(signature, inputs)
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}


def start_rest_server(host):
    """Serves `host` over HTTP on a free localhost port in a daemon thread; returns (server, url)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            match = _PATH.match(self.path)
            if not match:
                return self._reply(404, {"error": f"Malformed request: POST {self.path}"})
            try:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = host.rest_predict(match["name"], match["version"], body)
            except (LookupError, KeyError) as error:
                return self._reply(404, {"error": str(error).strip("'\"")})
            except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
                return self._reply(400, {"error": getattr(error, "message", str(error))})
            return self._reply(200, reply)

        def _reply(self, code, payload):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def start_grpc_server(host):
    """Serves PredictionService.Predict for `host` on a free localhost port; returns (server, address)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC's naming)
            spec = request.model_spec
            try:
                signature = host.signature(spec.name, spec.version.value if spec.HasField("version") else None,
                                           spec.signature_name or "serving_default")
                inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
                outputs = _run(signature, {k: v.tolist() for k, v in inputs.items()})
            except (LookupError, KeyError) as error:
                context.abort(grpc.StatusCode.NOT_FOUND, str(error))
            except tf.errors.InvalidArgumentError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"
