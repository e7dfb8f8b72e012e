"""SavedModel export of encoders (serving signature with preprocessing inside) and loaders."""
from tfssl.export.saved_model import ExportedEncoder, export_encoder, load_export_metadata, raw_pixels_to_model_input

__all__ = ["ExportedEncoder", "export_encoder", "load_export_metadata", "raw_pixels_to_model_input"]
