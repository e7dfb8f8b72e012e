"""Which cases of a parametrised test run by default, and which only with -m slow."""
import pytest


def default_run(values, default):
    """`pytest.param`s of `values`, those not in `default` marked slow (run them with -m slow).

    Parametrised tests of one mechanism over many methods / options keep a representative few in the
    default run, so the suite stays near 10 minutes on 2 cores while every case still runs under -m slow.
    """
    unknown = set(default) - set(values)
    if unknown:
        raise ValueError(f"default_run: {sorted(unknown)} are not among the parameters {list(values)}")
    return [pytest.param(v, marks=[] if v in default else [pytest.mark.slow]) for v in values]
