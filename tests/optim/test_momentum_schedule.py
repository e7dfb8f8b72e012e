"""Cosine EMA momentum schedule: end points and closed-form midpoint (BYOL sec. 3.2)."""
import math

import pytest

from tfssl.optim import cosine_momentum


def test_end_points_and_midpoint():
    assert float(cosine_momentum(0, 100, base=0.996)) == pytest.approx(0.996)
    assert float(cosine_momentum(100, 100, base=0.996)) == pytest.approx(1.0)
    assert float(cosine_momentum(250, 100, base=0.996)) == pytest.approx(1.0)  # clipped after the end
    assert float(cosine_momentum(50, 100, base=0.99)) == pytest.approx(0.995, abs=1e-6)
    expected = 1 - (1 - 0.9) * (math.cos(math.pi * 0.3) + 1) / 2
    assert float(cosine_momentum(30, 100, base=0.9)) == pytest.approx(expected, rel=1e-6)


def test_constant_when_base_equals_final():
    assert float(cosine_momentum(37, 100, base=0.999, final=0.999)) == pytest.approx(0.999)


@pytest.mark.parametrize("kwargs", [dict(total_steps=0), dict(base=1.1), dict(base=0.9, final=0.8)])
def test_bad_arguments(kwargs):
    args = dict(step=1, total_steps=10, base=0.99)
    args.update(kwargs)
    with pytest.raises(ValueError):
        cosine_momentum(**args)
