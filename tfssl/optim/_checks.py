"""Argument checks shared by the optim modules (one-line ValueErrors)."""
import numbers

import numpy as np


def is_number(value):
    """True for Python / numpy real numbers (bools excluded).

    Args:
        value: anything.

    Returns:
        bool.
    """
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(
        value, bool
    )


def check_non_negative(name, value):
    """Raises ValueError unless `value` is a real number >= 0.

    Args:
        name: argument name used in the message.
        value: the value to check.

    Returns:
        `value` as a float.
    """
    if not is_number(value) or not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return float(value)


def check_momentum(value):
    """Raises ValueError unless 0 <= momentum < 1.

    Args:
        value: the momentum coefficient.

    Returns:
        `value` as a float.
    """
    if not is_number(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"`momentum` must be a number in [0, 1), got {value!r}.")
    return float(value)


def check_learning_rate(value):
    """Checks a numeric learning rate is >= 0; schedules and callables pass through.

    Args:
        value: float, `LearningRateSchedule` or zero-argument callable.

    Returns:
        `value` (a float when it was a number).
    """
    if is_number(value):
        return check_non_negative("learning_rate", value)
    if callable(value):
        return value
    raise ValueError(
        f"`learning_rate` must be a number >= 0, a LearningRateSchedule or a callable, got {value!r}."
    )
