#!/usr/bin/env python3
"""Embed a folder of images with a tfssl encoder served by TF Serving (REST or gRPC).

  python export/client.py --images=photos/ --output=embeddings.npz \
      --rest=http://localhost:8501 --model_name=tfssl_encoder
  python export/client.py --images=photos/ --output=embeddings.npz --grpc=localhost:8500

The files' bytes are sent as they are to the `serve_image_bytes` signature (the server decodes,
crops and resizes), in batches. The output .npz holds one array per model output ("embedding",
and "projection" / endpoints when the export has them), row i belonging to `paths[i]` (relative to
--images), plus `skipped` / `skip_reasons` for files that are not images the server could decode.

REST needs only numpy (and the standard library); gRPC needs grpcio and tensorflow-serving-api.
No tfssl code is needed on the client.
"""
import argparse
import base64
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SIGNATURE = "serve_image_bytes"
INPUT_NAME = "image_bytes"
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")


class RequestRejected(Exception):
    """The server refused the request's content (HTTP 400 / gRPC INVALID_ARGUMENT): bad image bytes."""


class ServerError(Exception):
    """Anything else: server down, unknown model or signature, internal error."""


def list_images(root):
    """Image files under `root` (recursive, sorted, by extension), as paths relative to `root`."""
    if not os.path.isdir(root):
        raise SystemExit(f"client: error: --images={root} is not a directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


class RestClient:
    """POST {"signature_name", "instances": [{"b64": ...}, ...]} to /v1/models/<name>[/versions/<v>]:predict."""

    def __init__(self, url, model_name, version=None, signature=SIGNATURE, timeout=60.0):
        path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "") + ":predict"
        self.url = url.rstrip("/") + path
        self.signature = signature
        self.timeout = timeout

    def predict(self, blobs):
        body = {"signature_name": self.signature,
                "instances": [{"b64": base64.b64encode(blob).decode("ascii")} for blob in blobs]}
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as error:
            message = _error_text(error)
            if error.code == 400:
                raise RequestRejected(message) from error
            raise ServerError(f"{self.url}: HTTP {error.code}: {message}") from error
        except urllib.error.URLError as error:
            raise ServerError(f"{self.url}: {error.reason}") from error
        return _rows_to_columns(reply["predictions"])


def _error_text(error):
    try:
        return json.loads(error.read()).get("error", "")
    except (ValueError, AttributeError):
        return str(error)


def _rows_to_columns(predictions):
    """REST row-format predictions -> {output name: array}. One output comes without its name."""
    if predictions and isinstance(predictions[0], dict):
        return {name: np.asarray([row[name] for row in predictions], np.float32) for name in predictions[0]}
    return {"embedding": np.asarray(predictions, np.float32)}


class GrpcClient:
    """PredictionService.Predict with a string tensor of the files' bytes."""

    def __init__(self, address, model_name, version=None, signature=SIGNATURE, timeout=60.0):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self._grpc, self._tf, self._predict_pb2 = grpc, tf, predict_pb2
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 1 << 30),
                                                               ("grpc.max_send_message_length", 1 << 30)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.address, self.model_name, self.version = address, model_name, version
        self.signature, self.timeout = signature, timeout

    def predict(self, blobs):
        request = self._predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature
        if self.version:
            request.model_spec.version.value = int(self.version)
        request.inputs[INPUT_NAME].CopyFrom(self._tf.make_tensor_proto(list(blobs), dtype=self._tf.string))
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except self._grpc.RpcError as error:
            if error.code() == self._grpc.StatusCode.INVALID_ARGUMENT:
                raise RequestRejected(error.details()) from error
            raise ServerError(f"{self.address}: {error.code().name}: {error.details()}") from error
        return {name: self._tf.make_ndarray(tensor).astype(np.float32) for name, tensor in response.outputs.items()}


def is_image_error(message):
    """Whether a rejection is about the image bytes (skip the file) rather than the request (abort).

    The export's own check and TensorFlow's decoders name the format ("not JPEG or PNG files",
    "Invalid JPEG data", "Invalid PNG data", "Unknown image file format").
    """
    return any(word in message for word in ("JPEG", "PNG", "image file format"))


def embed_files(client, root, paths, batch_size, log=print):
    """Embeds `paths` in batches; a rejected batch is retried file by file to find the bad ones.

    A file rejected for a reason other than its bytes (wrong signature, wrong input name) stops the
    run with ServerError instead of skipping every file.

    Returns:
      (outputs {name: [N_ok, ...] array}, kept paths, skipped [(path, reason)]).
    """
    columns, kept, skipped = {}, [], []

    def add(outputs, batch_paths):
        for name, value in outputs.items():
            columns.setdefault(name, []).append(value)
        kept.extend(batch_paths)

    for start in range(0, len(paths), batch_size):
        batch, blobs = [], []
        for path in paths[start:start + batch_size]:
            with open(os.path.join(root, path), "rb") as f:
                data = f.read()
            if not data.startswith(_MAGIC):
                skipped.append((path, "not a JPEG or PNG file"))
                continue
            batch.append(path)
            blobs.append(data)
        if not batch:
            continue
        try:
            add(client.predict(blobs), batch)
        except RequestRejected:
            for path, blob in zip(batch, blobs):
                try:
                    add(client.predict([blob]), [path])
                except RequestRejected as error:
                    message = str(error).strip()
                    if not is_image_error(message):
                        raise ServerError(f"request rejected: {message}") from error
                    skipped.append((path, message.splitlines()[0]))
        log(f"  {min(start + batch_size, len(paths))}/{len(paths)} files")
    outputs = {name: np.concatenate(parts) for name, parts in columns.items()}
    return outputs, kept, skipped


def write_npz(output, outputs, kept, skipped):
    """Writes the .npz atomically (temporary file, then rename)."""
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder)
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **outputs, paths=np.asarray(kept, dtype=str),
                 skipped=np.asarray([p for p, _ in skipped], dtype=str),
                 skip_reasons=np.asarray([r for _, r in skipped], dtype=str))
    os.replace(tmp, output)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="Folder of .jpg/.jpeg/.png files (searched recursively).")
    parser.add_argument("--output", required=True, help="Where to write the .npz of embeddings.")
    server = parser.add_mutually_exclusive_group()
    server.add_argument("--rest", default=None, help="REST endpoint, e.g. http://localhost:8501 (default).")
    server.add_argument("--grpc", default=None, help="gRPC endpoint host:port, e.g. localhost:8500.")
    parser.add_argument("--model_name", default="tfssl_encoder")
    parser.add_argument("--version", type=int, default=None, help="Model version (default: the server's latest).")
    parser.add_argument("--signature", default=SIGNATURE)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=60.0, help="Seconds per request.")
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error(f"--batch_size must be > 0, got {args.batch_size}")
    if not args.output.endswith(".npz"):
        parser.error(f"--output must end in .npz, got {args.output}")
    return args


def main(argv=None):
    args = parse_args(argv)
    common = dict(model_name=args.model_name, version=args.version, signature=args.signature, timeout=args.timeout)
    if args.grpc:
        client = GrpcClient(args.grpc, **common)
    else:
        client = RestClient(args.rest or "http://localhost:8501", **common)
    paths = list_images(args.images)
    if not paths:
        raise SystemExit(f"client: error: no {'/'.join(IMAGE_EXTENSIONS)} files under {args.images}")
    try:
        outputs, kept, skipped = embed_files(client, args.images, paths, args.batch_size)
    except ServerError as error:
        raise SystemExit(f"client: error: {error}")
    write_npz(args.output, outputs, kept, skipped)
    shapes = ", ".join(f"{name} {tuple(value.shape)}" for name, value in sorted(outputs.items()))
    print(f"wrote {args.output}: {len(kept)} images ({shapes}); skipped {len(skipped)}")
    for path, reason in skipped:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
