"""Pictures and an HTML report of training runs (matplotlib, scikit-learn t-SNE, plain HTML)."""
from tfssl.report.plots import (augmentation_preview, embedding_map, training_curves, write_eval_pictures,
                                write_projector, write_run_pictures)

__all__ = ["augmentation_preview", "embedding_map", "training_curves", "write_eval_pictures", "write_projector",
           "write_run_pictures", "build_report"]


def build_report(*args, **kwargs):
    """See `tfssl.report.html.build_report`."""
    from tfssl.report.html import build_report as build

    return build(*args, **kwargs)
