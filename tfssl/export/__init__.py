"""Encoder export for TF Serving (SavedModel with preprocessing inside) and the loaders of exports.

  export_encoder(encoder, export_base, image_size, ...) -> <export_base>/<model_name>/<version>/
  resolve_version_dir(path), load_export_metadata(path), load_keras_encoder(path), ExportedEncoder(path)
  signature_report(path): the signatures as `saved_model_cli show --all` lists them
"""
from tfssl.export.checks import check_head_restored, head_is_checkpointed
from tfssl.export.layout import list_versions, resolve_version_dir
from tfssl.export.report import signature_report
from tfssl.export.saved_model import (
    ExportedEncoder,
    export_encoder,
    export_encoder_to_dir,
    load_export_metadata,
    load_keras_encoder,
)
from tfssl.export.signatures import image_bytes_to_model_input, raw_pixels_to_model_input
from tfssl.export.warmup import build_warmup_logs, read_warmup_file

__all__ = [
    "ExportedEncoder",
    "build_warmup_logs",
    "check_head_restored",
    "export_encoder",
    "export_encoder_to_dir",
    "head_is_checkpointed",
    "image_bytes_to_model_input",
    "list_versions",
    "load_export_metadata",
    "load_keras_encoder",
    "raw_pixels_to_model_input",
    "read_warmup_file",
    "resolve_version_dir",
    "signature_report",
]
