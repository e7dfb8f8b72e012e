"""Optimizer factory: one name -> a Keras optimizer with biases and normalisation params not decayed."""
import keras

from tfssl.optim._checks import check_learning_rate, check_momentum, check_non_negative
from tfssl.optim.lars import LARS

OPTIMIZERS = ("lars", "sgd", "adamw", "lamb")

# Keras' exclude_from_weight_decay(var_names=...) runs re.search(pattern, variable.name), and on the
# TensorFlow backend it sees the tf.Variable, whose name is the full path ("model/fc/bias:0", per-replica
# copies "model/fc/bias/replica_1:0"). A bare "bias" would also exclude every kernel of a layer whose name
# contains "bias"/"beta", so the pattern is anchored to the last path component. Keras BatchNormalization,
# LayerNormalization and GroupNormalization name their scale / offset "gamma" / "beta".
NO_DECAY_PATTERN = r"(^|/)(bias|gamma|beta)(/replica_\d+)?(:\d+)?$"


def build_optimizer(name, learning_rate, weight_decay=0.0, momentum=0.9):
    """Builds the optimizer named `name`, excluding biases and normalisation params from weight decay.

    - "lars": `tfssl.optim.LARS` (L2 inside the rule; rank <= 1 variables excluded from decay and
      trust ratio), as in SimCLR (Chen et al. 2020).
    - "sgd": `keras.optimizers.SGD` with (heavy-ball) momentum and Keras' decoupled decay w -= lr*wd*w.
    - "adamw": `keras.optimizers.AdamW` (Loshchilov & Hutter 2019), beta_1 = momentum.
    - "lamb": `keras.optimizers.Lamb` (You et al. 2020), beta_1 = momentum, decoupled decay.

    The non-LARS exclusion goes through Keras' `exclude_from_weight_decay`, which is Python-side state:
    it is not part of `get_config`, so an optimizer re-created from a config decays every variable.

    Args:
        name: one of `OPTIMIZERS`.
        learning_rate: float >= 0 or a `keras.optimizers.schedules.LearningRateSchedule`.
        weight_decay: decay coefficient >= 0.
        momentum: momentum (LARS, SGD) or first-moment decay beta_1 (AdamW, Lamb), in [0, 1).

    Returns:
        A `keras.optimizers.Optimizer`.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
    learning_rate = check_learning_rate(learning_rate)
    weight_decay = check_non_negative("weight_decay", weight_decay)
    momentum = check_momentum(momentum)
    if key == "lars":
        return LARS(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)
    if key == "sgd":
        # None rather than 0.0 skips Keras' per-step decay pass entirely.
        optimizer = keras.optimizers.SGD(
            learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay or None
        )
    elif key == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate=learning_rate, weight_decay=weight_decay, beta_1=momentum
        )
    else:
        optimizer = keras.optimizers.Lamb(
            learning_rate=learning_rate, weight_decay=weight_decay or None, beta_1=momentum
        )
    optimizer.exclude_from_weight_decay(var_names=[NO_DECAY_PATTERN])
    return optimizer


def constant_rate_copy(optimizer, learning_rate):
    """A fresh optimizer of `optimizer`'s class and settings, but with a constant `learning_rate`.

    SimSiam trains its predictor at the base rate while the rest follows the cosine (Chen & He 2021,
    sec. 4.4 / appendix A). The copy has its own slots and step counter; weight-decay exclusions (which
    `get_config` does not carry) are re-applied as `build_optimizer` sets them.

    Args:
      optimizer: a Keras optimizer from `build_optimizer` (or any Keras optimizer).
      learning_rate: float > 0.

    Returns:
      The new, unbuilt optimizer.
    """
    learning_rate = check_learning_rate(float(learning_rate))
    config = optimizer.get_config()
    config["learning_rate"] = learning_rate
    config["name"] = f"{config.get('name', 'optimizer')}_constant_rate"
    copy = type(optimizer).from_config(config)
    if not isinstance(copy, LARS):
        copy.exclude_from_weight_decay(var_names=[NO_DECAY_PATTERN])
    return copy


def peak_learning_rate(optimizer):
    """The largest rate `optimizer`'s schedule reaches (`WarmupCosine` peak, or the constant rate)."""
    from tfssl.optim.schedules import WarmupCosine

    rate = optimizer._learning_rate if hasattr(optimizer, "_learning_rate") else optimizer.learning_rate
    if isinstance(rate, WarmupCosine):
        return rate.peak_learning_rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        raise ValueError(f"cannot tell the peak of a {type(rate).__name__} schedule; use WarmupCosine or a float")
    return float(keras.ops.convert_to_numpy(rate))
