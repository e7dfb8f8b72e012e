"""CMC's two-view contrastive loss against two memory banks.

Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020 (arXiv 1906.05849; the two-view
objective, its memory-bank and NCE approximation) and the authors' code (HobbitLong/CMC, `NCEAverage`,
`NCECriterion`). Each view V has its own encoder and its own memory bank holding that view's
(slowly updated, unit-norm) features of every training image. With V1 = L and V2 = ab:

    L -> ab:   features of L contrasted with the ab bank: positive = ab bank row of the same image,
               negatives = K sampled ab bank rows;
    ab -> L:   features of ab contrasted with the L bank (same sampled rows);
    loss = loss(L -> ab) + loss(ab -> L)           (CMC: the two directions are summed)

with logits <f, v> / T (T = 0.07) and either the NCE objective with a normaliser Z per direction
(estimated once, then frozen, as in the code) or the softmax over [positive, K negatives]. Both are the
InstDis objectives, so this module only pairs features with the right bank and calls
`tfssl.losses.instdis` (`instdis_logits`, `instdis_loss`, `estimate_nce_normalizer`,
`frozen_nce_normalizer`).

Differences from the reference code: the K negatives are shared by the whole global batch (one draw
per step, `MemoryBank.sample`) where CMC's `AliasMethod` draws K per example; the losses are means
over this replica's examples (the code divides the sum by the batch size, the same value).
"""
import collections

import tensorflow as tf

from tfssl.losses.instdis import check_instdis_loss, instdis_logits, instdis_loss

CMCOutput = collections.namedtuple("CMCOutput", ["loss", "loss_l_to_ab", "loss_ab_to_l", "logits_l_to_ab",
                                                 "logits_ab_to_l"])


def _check_normalizers(normalizers):
    if normalizers is None:
        return None, None
    if not isinstance(normalizers, (tuple, list)) or len(normalizers) != 2:
        raise ValueError("normalizers must be None or a pair (Z of L -> ab, Z of ab -> L), got "
                         f"{normalizers!r}")
    return tuple(normalizers)


def cmc_logits(features_l, features_ab, positives_l, positives_ab, negatives_l, negatives_ab,
               temperature=0.07):
    """Logits of both directions: `(L -> ab, ab -> L)`, each float32 `[n, 1 + K]`, positive in column 0.

    Args:
      features_l: `[n, d]` L2-normalised features of view 1 (L) on this replica.
      features_ab: `[n, d]` L2-normalised features of view 2 (ab), row i the same image.
      positives_l: `[n, d]` rows of the L bank for the batch's images.
      positives_ab: `[n, d]` rows of the ab bank for the batch's images.
      negatives_l: `[K, d]` sampled rows of the L bank.
      negatives_ab: `[K, d]` the same sampled rows of the ab bank.
      temperature: T > 0 (0.07 in the paper).

    Returns:
      `(logits_l_to_ab, logits_ab_to_l)`: L features against the ab bank, ab features against the L bank.
    """
    logits_l_to_ab = instdis_logits(features_l, positives_ab, negatives_ab, temperature)
    logits_ab_to_l = instdis_logits(features_ab, positives_l, negatives_l, temperature)
    return logits_l_to_ab, logits_ab_to_l


def cmc_loss(features_l, features_ab, positives_l, positives_ab, negatives_l, negatives_ab, temperature=0.07,
             loss="nce", num_data=None, normalizers=None):
    """CMC loss L -> ab plus ab -> L against the two memory banks (see the module docstring).

    Args:
      features_l, features_ab, positives_l, positives_ab, negatives_l, negatives_ab, temperature: as in
        `cmc_logits`. Bank rows are constants (no gradient).
      loss: "nce" (the paper's NCE approximation) or "softmax".
      num_data: N, the number of training images (bank rows); required for "nce".
      normalizers: None (each direction estimates Z from this global batch, `estimate_nce_normalizer`)
        or a pair `(Z_l_to_ab, Z_ab_to_l)` of scalars, e.g. values returned by `frozen_nce_normalizer`
        on the two directions' logits (CMC estimates each once and keeps it). Ignored by "softmax".

    Returns:
      `CMCOutput(loss, loss_l_to_ab, loss_ab_to_l, logits_l_to_ab, logits_ab_to_l)`: float32 scalars
      (means over this replica's examples; `loss` is the sum of the two directions) and the
      `[n, 1 + K]` logits of each direction.

    Raises:
      ValueError: on an unknown loss, a bad temperature, missing num_data for "nce", bad normalizers or
        mismatched shapes.
    """
    check_instdis_loss(loss)
    z_l_to_ab, z_ab_to_l = _check_normalizers(normalizers)
    l_to_ab = instdis_loss(features_l, positives_ab, negatives_ab, temperature, loss, num_data, z_l_to_ab)
    ab_to_l = instdis_loss(features_ab, positives_l, negatives_l, temperature, loss, num_data, z_ab_to_l)
    return CMCOutput(l_to_ab.loss + ab_to_l.loss, l_to_ab.loss, ab_to_l.loss, l_to_ab.logits, ab_to_l.logits)


def cmc_bank_loss(bank_l, bank_ab, features_l, features_ab, indices, negative_indices, temperature=0.07,
                  loss="nce", normalizers=None):
    """`cmc_loss` with the rows looked up in two `tfssl.heads.MemoryBank`s (no update: the method updates
    both banks after the optimizer step, `bank.update(indices, features)`).

    Args:
      bank_l: `MemoryBank` of view-1 (L) features.
      bank_ab: `MemoryBank` of view-2 (ab) features, the same size.
      features_l, features_ab: `[n, d]` L2-normalised features of this replica's images.
      indices: int `[n]` the images' rows (positions in the training split).
      negative_indices: int `[K]` sampled rows, e.g. `bank_l.sample(K, seed)`, used in both banks.
      temperature, loss, normalizers: as in `cmc_loss`; num_data is the banks' size.

    Returns:
      `CMCOutput` as `cmc_loss`.
    """
    if bank_l.size != bank_ab.size:
        raise ValueError(f"the two memory banks must have one row per training image each, got sizes "
                         f"{bank_l.size} and {bank_ab.size}")
    negative_indices = tf.convert_to_tensor(negative_indices)
    return cmc_loss(features_l, features_ab, bank_l.lookup(indices), bank_ab.lookup(indices),
                    bank_l.lookup(negative_indices), bank_ab.lookup(negative_indices), temperature, loss,
                    num_data=bank_l.size, normalizers=normalizers)
