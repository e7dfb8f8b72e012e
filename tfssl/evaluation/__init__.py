"""Evaluation of frozen representations: feature extraction, weighted kNN and linear probe.

`evaluate_features` runs the two standard protocols on already extracted features:
the linear probe (Kolesnikov et al. 2019; SimCLR, Chen et al. 2020) and the weighted kNN
classifier (Wu et al. 2018).
"""

from tfssl.evaluation.features import extract_features
from tfssl.evaluation.knn import knn_accuracy, knn_predict, knn_votes
from tfssl.evaluation.linear import fit_standardizer, linear_probe

__all__ = [
    "evaluate_features",
    "extract_features",
    "fit_standardizer",
    "knn_accuracy",
    "knn_predict",
    "knn_votes",
    "linear_probe",
]


def evaluate_features(train, val, test, num_classes, knn_k=200, knn_temperature=0.1,
                      linear_kwargs=None):
    """Linear-probe and weighted-kNN accuracy of frozen features.

    Args:
        train: (features float [N, D], labels int [N]); the kNN memory bank and probe training set.
        val: (features [N_val, D], labels [N_val]); selects the probe's l2 value.
        test: (features [N_test, D], labels [N_test]) or None.
        num_classes: number of classes C.
        knn_k: neighbours for kNN (clipped to N with a warning).
        knn_temperature: kNN temperature T.
        linear_kwargs: optional dict of extra `linear_probe` arguments (l2_grid, epochs, ...).

    Returns:
        {"linear": linear_probe(...) dict,
         "knn": {"k", "temperature", "val_accuracy", "test_accuracy"}} (test_accuracy None when
        test is None; "k" is the requested k).
    """
    linear = linear_probe(train, val, test, num_classes, **(linear_kwargs or {}))
    # kNN has no hyperparameter chosen here (k and T are fixed), so scoring test is not selection.
    knn = {"k": knn_k, "temperature": knn_temperature}
    for name, split in (("val", val), ("test", test)):
        knn[f"{name}_accuracy"] = None if split is None else knn_accuracy(
            train[0], train[1], split[0], split[1], num_classes, k=knn_k,
            temperature=knn_temperature)
    return {"linear": linear, "knn": knn}
