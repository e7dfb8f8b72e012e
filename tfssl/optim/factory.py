"""Optimizer factory: one name -> a Keras optimizer, with the weight-decay semantics a recipe asks for."""
import keras

from tfssl.optim._checks import check_learning_rate, check_momentum, check_non_negative
from tfssl.optim.coupled_sgd import CoupledSGD
from tfssl.optim.lars import LARS

OPTIMIZERS = ("lars", "sgd", "adamw", "lamb")
# How weight decay enters the update (see `build_optimizer`), and which variables it spares.
WEIGHT_DECAY_MODES = ("auto", "coupled", "decoupled")
WEIGHT_DECAY_EXCLUDES = ("norm_and_bias", "none")

# Keras' exclude_from_weight_decay(var_names=...) runs re.search(pattern, variable.name), and on the
# TensorFlow backend it sees the tf.Variable, whose name is the full path ("model/fc/bias:0", per-replica
# copies "model/fc/bias/replica_1:0"). A bare "bias" would also exclude every kernel of a layer whose name
# contains "bias"/"beta", so the pattern is anchored to the last path component. Keras BatchNormalization,
# LayerNormalization and GroupNormalization name their scale / offset "gamma" / "beta".
NO_DECAY_PATTERN = r"(^|/)(bias|gamma|beta)(/replica_\d+)?(:\d+)?$"
# Variables LARS steps without a trust ratio: the online linear probe (`SSLMethod.probe`). SimCLR's
# reference keeps its supervised head out of LARS and adds an L2 term for it instead, which is what
# LARS does for a decayed, unadapted variable (g + wd * w, then a plain momentum step).
LARS_UNADAPTED = ("probe/",)


def resolve_weight_decay(name, mode="auto", exclude="norm_and_bias"):
    """Checks a (optimizer, weight-decay mode, exclusion) combination; returns the concrete mode.

    - "lars": coupled only (the L2 term lives inside the trust ratio) and norm_and_bias only (rank <= 1
      variables get neither decay nor trust ratio), as every LARS reference does (SimCLR, BYOL, MoCo v3,
      Barlow Twins, VICReg).
    - "sgd": "decoupled" (Keras, `w -= lr * wd * w` outside the momentum) or "coupled" (`g += wd * w`
      before the momentum, as `torch.optim.SGD`); auto = decoupled.
    - "adamw", "lamb": decoupled by definition.

    Args:
        name: one of `OPTIMIZERS`.
        mode: one of `WEIGHT_DECAY_MODES`.
        exclude: one of `WEIGHT_DECAY_EXCLUDES` ("none" decays every parameter, as the PyTorch
            references of MoCo v1/v2, SimSiam, InstDis and MoCo v3's ViT recipe do).

    Returns:
        "coupled" or "decoupled".

    Raises:
        ValueError: one line naming the combination and what would work.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {mode!r}.")
    if exclude not in WEIGHT_DECAY_EXCLUDES:
        raise ValueError(f"weight_decay_exclude must be one of {WEIGHT_DECAY_EXCLUDES}, got {exclude!r}.")
    if key == "lars":
        if mode == "decoupled":
            raise ValueError("lars adds its L2 term to the gradient inside the trust ratio: use "
                             "--weight_decay_mode=coupled (or auto), or --optimizer=sgd/adamw for decoupled decay.")
        if exclude == "none":
            raise ValueError("lars never decays or adapts biases and norm parameters (as every LARS reference): "
                             "use --weight_decay_exclude=norm_and_bias, or --optimizer=sgd to decay them.")
        return "coupled"
    if key in ("adamw", "lamb") and mode == "coupled":
        raise ValueError(f"{key} decays decoupled by definition: use --weight_decay_mode=decoupled (or auto), "
                         f"or --optimizer=sgd for an L2 term in the gradient.")
    return "coupled" if mode == "coupled" else "decoupled"


def build_optimizer(name, learning_rate, weight_decay=0.0, momentum=0.9, weight_decay_mode="auto",
                    weight_decay_exclude="norm_and_bias"):
    """Builds the optimizer named `name` with the weight-decay semantics asked for.

    - "lars": `tfssl.optim.LARS` (L2 inside the rule; rank <= 1 variables excluded from decay and
      trust ratio; the online probe, `LARS_UNADAPTED`, decayed but not adapted), as in SimCLR.
    - "sgd": heavy-ball momentum SGD; decoupled: `keras.optimizers.SGD(weight_decay=wd)`
      (`w -= lr * wd * w`); coupled: `tfssl.optim.CoupledSGD` (`g += wd * w`, through the momentum,
      about 1 / (1 - momentum) times stronger at the same wd: PyTorch's SGD, the MoCo / SimSiam /
      InstDis references).
    - "adamw": `keras.optimizers.AdamW` (Loshchilov & Hutter 2019), beta_1 = momentum.
    - "lamb": `keras.optimizers.Lamb` (You et al. 2020), beta_1 = momentum, decoupled decay.

    With `weight_decay_exclude="norm_and_bias"` biases and normalisation parameters are not decayed
    (through Keras' `exclude_from_weight_decay`, Python-side state that `get_config` does not carry:
    `constant_rate_copy` re-applies it); "none" decays every trainable variable.

    Args:
        name: one of `OPTIMIZERS`.
        learning_rate: float >= 0 or a `keras.optimizers.schedules.LearningRateSchedule`.
        weight_decay: decay coefficient >= 0.
        momentum: momentum (LARS, SGD) or first-moment decay beta_1 (AdamW, Lamb), in [0, 1).
        weight_decay_mode: one of `WEIGHT_DECAY_MODES` (see `resolve_weight_decay`).
        weight_decay_exclude: one of `WEIGHT_DECAY_EXCLUDES`.

    Returns:
        A `keras.optimizers.Optimizer`.
    """
    mode = resolve_weight_decay(name, weight_decay_mode, weight_decay_exclude)
    key = name.lower()
    learning_rate = check_learning_rate(learning_rate)
    weight_decay = check_non_negative("weight_decay", weight_decay)
    momentum = check_momentum(momentum)
    if key == "lars":
        return LARS(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay,
                    exclude_from_layer_adaptation=list(LARS_UNADAPTED))
    if key == "sgd" and mode == "coupled":
        optimizer = CoupledSGD(learning_rate=learning_rate, momentum=momentum, l2=weight_decay)
    elif key == "sgd":
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
    if weight_decay_exclude == "norm_and_bias":
        optimizer.exclude_from_weight_decay(var_names=[NO_DECAY_PATTERN])
    return optimizer


def constant_rate_copy(optimizer, learning_rate):
    """A fresh optimizer of `optimizer`'s class and settings, but with a constant `learning_rate`.

    SimSiam trains its predictor at the base rate while the rest follows the cosine (Chen & He 2021,
    sec. 4.4 / appendix A). The copy has its own slots and step counter; the weight-decay name exclusions
    (which `get_config` does not carry) are copied from `optimizer`.

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
    # Keras keeps the patterns given to exclude_from_weight_decay() only as this compiled regex.
    pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
    if pattern is not None and not isinstance(copy, LARS):
        copy.exclude_from_weight_decay(var_names=[pattern.pattern])
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
