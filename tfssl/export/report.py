"""`signature_report`: what a SavedModel serves, in `saved_model_cli show --all`'s layout.

Read from `saved_model.pb` alone (no graph is loaded), so it is quick and works on any SavedModel.
"""
import os

from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from tfssl.export.layout import SAVED_MODEL_FILE, resolve_version_dir


def read_saved_model_proto(version_dir):
    """The `SavedModel` proto of `version_dir/saved_model.pb`."""
    with open(os.path.join(version_dir, SAVED_MODEL_FILE), "rb") as f:
        return saved_model_pb2.SavedModel.FromString(f.read())


def _shape_text(tensor_shape):
    if tensor_shape.unknown_rank:
        return "unknown_rank"
    return "(" + ", ".join(str(dim.size) for dim in tensor_shape.dim) + ")"


def _tensor_lines(kind, key, info, indent):
    pad = " " * indent
    return [f"{pad}{kind}['{key}'] tensor_info:",
            f"{pad}    dtype: {types_pb2.DataType.Name(info.dtype)}",
            f"{pad}    shape: {_shape_text(info.tensor_shape)}",
            f"{pad}    name: {info.name}"]


def signature_lines(signature_def, indent=2):
    """Lines describing one SignatureDef's inputs, outputs and method, as saved_model_cli prints them."""
    pad = " " * indent
    lines = [f"{pad}The given SavedModel SignatureDef contains the following input(s):"]
    for key in sorted(signature_def.inputs):
        lines += _tensor_lines("inputs", key, signature_def.inputs[key], indent + 2)
    lines.append(f"{pad}The given SavedModel SignatureDef contains the following output(s):")
    for key in sorted(signature_def.outputs):
        lines += _tensor_lines("outputs", key, signature_def.outputs[key], indent + 2)
    lines.append(f"{pad}Method name is: {signature_def.method_name}")
    return lines


def _metadata_lines(version_dir):
    from tfssl.export.saved_model import load_export_metadata

    try:
        meta = load_export_metadata(version_dir)
    except FileNotFoundError:
        return []  # any SavedModel, not a tfssl export: the signatures alone
    lines = [f"tfssl export: {version_dir}"]
    for key in ("model_name", "version", "image_size", "embedding_dim", "method", "encoder", "checkpoint"):
        if key in meta:
            lines.append(f"  {key}: {meta[key]}")
    for name, spec in meta.get("output_specs", {}).items():
        shape = "(" + ", ".join("-1" if d is None else str(d) for d in spec["shape"]) + ")"
        lines.append(f"  output {name}: {spec['dtype']} {shape} {spec.get('description', '')}".rstrip())
    for name, text in meta.get("signatures", {}).items():
        lines.append(f"  signature {name}: {text}")
    return lines


def signature_report(path):
    """Text listing every MetaGraph's signatures with their inputs / outputs (dtype, shape, tensor).

    The signature blocks are laid out exactly as `saved_model_cli show --all --dir <version_dir>`
    prints them (its op list and concrete-function listing are left out); a tfssl export is preceded
    by a summary of its `assets.extra/tfssl_export.json`.

    Args:
      path: version dir or model dir (`resolve_version_dir`).

    Returns:
      The report as one string.
    """
    version_dir = resolve_version_dir(path)
    lines = _metadata_lines(version_dir)
    saved_model = read_saved_model_proto(version_dir)
    for meta_graph in sorted(saved_model.meta_graphs, key=lambda m: list(m.meta_info_def.tags)):
        tags = ", ".join(meta_graph.meta_info_def.tags)
        lines += ["", f"MetaGraphDef with tag-set: '{tags}' contains the following SignatureDefs:"]
        for key in sorted(meta_graph.signature_def):
            lines += ["", f"signature_def['{key}']:"]
            lines += signature_lines(meta_graph.signature_def[key])
    return "\n".join(lines) + "\n"
