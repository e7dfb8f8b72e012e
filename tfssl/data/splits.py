"""Split grammar, slicing and the seeded train/validation carve shared by all data sources.

Split grammar (the same for every source)::

    split  := base [ "[" [bound] ":" [bound] "]" ]
    base   := "train" | "validation" | "test"
    bound  := ["-"] digits ["%"]

Examples: ``"train"``, ``"train[:2000]"``, ``"test[:10%]"``, ``"validation[-500:]"``.
Integer bounds follow Python slice semantics (negative counts from the end, out-of-range bounds are
clipped); percent bounds are percentages of the split *after* any validation carve, rounded to the
closest example (like TFDS). A slice that selects nothing is an error, since an empty split is almost
always a typo.

When a dataset has no native validation split, "validation" is a seeded random ``val_fraction`` of
the native train split and "train" is the remainder, so the two never overlap and together are the
whole native train split (see :func:`carve_validation`).
"""

import dataclasses
import math
import re
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf

SPLITS = ("train", "validation", "test")

_SPLIT_RE = re.compile(r"^(?P<base>[a-z_]+)(?:\[(?P<start>[^:\]]*):(?P<stop>[^:\]]*)\])?$")
_BOUND_RE = re.compile(r"^(?P<value>-?\d+)(?P<pct>%?)$")


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """A parsed split string.

    Attributes:
        base: one of ``SPLITS``.
        start: lower slice bound as ``(value, is_percent)`` or None (from the beginning).
        stop: upper slice bound as ``(value, is_percent)`` or None (to the end).
        text: the original split string, for error messages.
    """

    base: str
    start: Optional[Tuple[int, bool]] = None
    stop: Optional[Tuple[int, bool]] = None
    text: str = ""

    @property
    def is_sliced(self) -> bool:
        return self.start is not None or self.stop is not None


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """One split of a dataset, ready for a tf.data pipeline.

    Attributes:
        dataset: UNBATCHED ``tf.data.Dataset`` of ``(image, label, index)``: image uint8 [H, W, C],
            label int64 scalar (-1 when unlabelled), index int64 scalar = stable position of the
            example within this split, in ``[0, num_examples)`` (usable as a memory-bank slot).
        num_examples: number of elements of ``dataset``.
        num_classes: number of classes, or None when the data are unlabelled.
        image_shape: ``(H, W, C)``; H and W are None when images differ in size and no
            ``image_size`` was requested.
        class_names: class names indexed by label, or None.
        name: dataset name as given to ``load_split``.
        split: split string as given to ``load_split``.
        num_skipped: number of unreadable files skipped in the source split this split was taken
            from (image folders only; 0 otherwise).
        skipped_files: paths of those files.
    """

    dataset: tf.data.Dataset
    num_examples: int
    num_classes: Optional[int]
    image_shape: Tuple[Optional[int], Optional[int], int]
    class_names: Optional[List[str]]
    name: str
    split: str
    num_skipped: int = 0
    skipped_files: Tuple[str, ...] = ()


def _parse_bound(text: str, split: str) -> Optional[Tuple[int, bool]]:
    text = text.strip()
    if not text:
        return None
    match = _BOUND_RE.match(text)
    if match is None:
        raise ValueError(
            f"bad slice bound {text!r} in split {split!r}: expected an integer like 2000 or -500, "
            "or a percentage like 10%"
        )
    value, is_pct = int(match["value"]), bool(match["pct"])
    if is_pct and abs(value) > 100:
        raise ValueError(f"bad slice bound {text!r} in split {split!r}: percentages must lie in [-100%, 100%]")
    return value, is_pct


def parse_split(split: str) -> SplitSpec:
    """Parses a split string such as ``"train[:10%]"``.

    Args:
        split: the split string (grammar in the module docstring).

    Returns:
        The parsed ``SplitSpec``.

    Raises:
        ValueError: for an unknown base name or a malformed slice.
    """
    if not isinstance(split, str):
        raise ValueError(f"split must be a string like 'train' or 'test[:10%]', got {split!r}")
    text = split.replace(" ", "")
    match = _SPLIT_RE.match(text)
    if match is None:
        raise ValueError(
            f"bad split {split!r}: expected one of {list(SPLITS)} with an optional slice such as "
            "'train[:2000]' or 'test[:10%]'"
        )
    base = match["base"]
    if base not in SPLITS:
        raise ValueError(f"unknown split {base!r} in {split!r}: choose one of {list(SPLITS)}")
    start = _parse_bound(match["start"] or "", split)
    stop = _parse_bound(match["stop"] or "", split)
    return SplitSpec(base=base, start=start, stop=stop, text=split)


def _bound_to_index(bound: Optional[Tuple[int, bool]], n: int, default: int) -> int:
    if bound is None:
        return default
    value, is_pct = bound
    if is_pct:
        # Round half up to the closest example, so "[:10%]" of 54000 is exactly 5400.
        magnitude = int(math.floor(abs(value) * n / 100.0 + 0.5))
        value = -magnitude if value < 0 else magnitude
    if value < 0:
        value += n
    return min(max(value, 0), n)


def resolve_slice(spec: SplitSpec, num_examples: int) -> Tuple[int, int]:
    """Turns the slice of ``spec`` into absolute ``[start, stop)`` indices.

    Args:
        spec: a parsed split.
        num_examples: size of the (already carved) split being sliced.

    Returns:
        ``(start, stop)`` with ``0 <= start < stop <= num_examples``.

    Raises:
        ValueError: if the slice selects no example.
    """
    start = _bound_to_index(spec.start, num_examples, 0)
    stop = _bound_to_index(spec.stop, num_examples, num_examples)
    if stop <= start:
        raise ValueError(
            f"split {spec.text!r} selects no example of the {num_examples} in {spec.base!r}: "
            "use a slice whose start is before its stop"
        )
    return start, stop


def check_val_fraction(val_fraction: float) -> None:
    """Raises ValueError unless ``0 < val_fraction < 1``."""
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")


def num_validation(num_train: int, val_fraction: float) -> int:
    """Size of the validation carve: ``val_fraction`` of ``num_train`` rounded, at least 1.

    Raises:
        ValueError: if the carve would leave train or validation empty.
    """
    check_val_fraction(val_fraction)
    n_val = max(1, int(math.floor(num_train * float(val_fraction) + 0.5)))
    if n_val >= num_train:
        raise ValueError(
            f"cannot carve a validation split of fraction {val_fraction} from {num_train} train "
            "examples: need a smaller val_fraction or more data"
        )
    return n_val


def carve_validation(num_train: int, val_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded random train/validation partition of ``range(num_train)``.

    Args:
        num_train: size of the native train split.
        val_fraction: fraction (0, 1) that goes to validation.
        seed: seed of the permutation; the same seed always gives the same partition.

    Returns:
        ``(train_indices, validation_indices)``, int64, each sorted ascending (so both splits keep
        the native order), disjoint, and together a permutation of ``range(num_train)``.
    """
    n_val = num_validation(num_train, val_fraction)
    # PCG64 (default_rng) permutations are reproducible across numpy versions for a given seed.
    permutation = np.random.default_rng(seed).permutation(num_train)
    return np.sort(permutation[n_val:]).astype(np.int64), np.sort(permutation[:n_val]).astype(np.int64)


def select_indices(
    spec: SplitSpec,
    native_sizes: dict,
    val_fraction: float,
    seed: int,
) -> Tuple[str, np.ndarray]:
    """Indices (into the native split) selected by ``spec``, carving validation when needed.

    Args:
        spec: the parsed split.
        native_sizes: ``{native split name: num_examples}`` for the splits the source has; the
            name "validation" must be present iff the source has a native validation split.
        val_fraction: fraction of train carved out as validation when there is no native one.
        seed: seed of the carve.

    Returns:
        ``(native_split_name, indices)``: the native split to read and the sorted int64 indices
        into it, already sliced.

    Raises:
        ValueError: if the requested split is unavailable or the slice is empty.
    """
    base = spec.base
    if base in native_sizes:
        if base == "train" and "validation" not in native_sizes:
            indices = carve_validation(native_sizes["train"], val_fraction, seed)[0]
        else:
            indices = np.arange(native_sizes[base], dtype=np.int64)
        native = base
    elif base == "validation" and "train" in native_sizes:
        indices = carve_validation(native_sizes["train"], val_fraction, seed)[1]
        native = "train"
    else:
        raise ValueError(
            f"split {base!r} is not available here: choose one of {available_splits(native_sizes)}"
        )
    start, stop = resolve_slice(spec, len(indices))
    return native, indices[start:stop]


def available_splits(native_sizes: dict) -> List[str]:
    """Split names loadable from a source with the given native splits (validation may be carved)."""
    names = [name for name in SPLITS if name in native_sizes]
    if "train" in native_sizes and "validation" not in names:
        names.insert(1, "validation")
    return names
