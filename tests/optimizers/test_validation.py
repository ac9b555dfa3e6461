"""Every bad hyperparameter is refused in __init__ with a message naming it, the value, the
allowed range and a fix."""

import pytest
import torch

from optigrade import optimizers
from optigrade.optimizers import measure_drift

BAD = [
    ("zo-sgd", dict(mu=0.0), "mu must be > 0, got 0.0"),
    ("zo-sgd", dict(mu=-1.0), "mu must be > 0, got -1.0; the smoothing radius"),
    ("zo-adam", dict(q=0), "q must be an integer >= 1, got 0"),
    ("zo-sgd", dict(q=1.5), "q must be an integer >= 1"),
    ("zo-sgd", dict(dist="uniform"), "dist must be one of \\['gaussian', 'sphere', 'rademacher'\\]"),
    ("forward-grad", dict(dist="sphere"), "dist must be one of \\['gaussian', 'rademacher'\\]"),
    ("zo-sgd", dict(difference="backward"), "difference must be one of"),
    ("zo-sgd", dict(seed=-1), "seed must be an integer"),
    ("zo-sgd-momentum", dict(momentum=1.0), "momentum must be in \\[0, 1\\)"),
    ("zo-sgd", dict(lr=0.0), "lr must be > 0, got 0.0"),
    ("adam", dict(lr=-1.0), "lr must be > 0, got -1.0"),
    ("sgd", dict(lr=0.0), "lr must be > 0"),
    ("signsgd", dict(lr=float("nan")), "lr must be > 0"),
    ("adamw", dict(betas=(0.9, 1.0)), "beta2 must be in \\[0, 1\\), got 1.0"),
    ("zo-adam", dict(betas=(-0.1, 0.9)), "beta1 must be in \\[0, 1\\), got -0.1"),
    ("signadam", dict(betas=(1.0, 0.9)), "beta1 must be in \\[0, 1\\)"),
    ("lion", dict(betas=(0.9, 1.5)), "beta2 must be in \\[0, 1\\)"),
    ("adazo", dict(betas=(0.9,)), "betas must be a pair"),
    ("signum", dict(beta=1.0), "beta must be in \\[0, 1\\)"),
    ("signadam", dict(levels=0), "levels must be an integer >= 1, got 0"),
    ("signsgd", dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    ("adam+gru", dict(gamma=0.0), "gamma must be in \\(0, 1\\], got 0.0"),
    ("adam+gru", dict(gamma=1.5), "gamma must be in \\(0, 1\\], got 1.5"),
    ("signadam+gru", dict(cos_clip=0.5), "cos_clip must be None or in \\[-1, 0\\)"),
    ("adam+gru", dict(rectify="retain"), "rectify must be one of"),
    ("sophia-h", dict(rho=0.0), "rho must be > 0"),
    ("sophia-g", dict(k=0), "k must be an integer >= 1"),
    ("soul", dict(bartlett_scale=-1.0), "bartlett_scale must be > 0"),
    ("sophia-h", dict(estimator="exact"), "estimator must be one of"),
    ("adahessian", dict(hessian_power=2.0), "hessian_power must be in \\(0, 1\\]"),
    ("adahessian", dict(eps=0.0), "eps must be > 0"),
    ("fo-rs", dict(sigma=0.0), "sigma must be > 0"),
    ("fo-rs", dict(n_samples=0), "n_samples must be an integer >= 1"),
    ("sam", dict(rho=-0.01), "rho must be > 0"),
    ("sam", dict(base="nope"), "unknown optimizer 'nope'"),
    ("hybrid", dict(n_fo=0), "n_fo must be an integer >= 1"),
    ("hybrid", dict(n_zo=-3), "n_zo must be an integer >= 1"),
    ("hybrid", dict(mode="interleave"), "mode must be one of"),
    ("hybrid", dict(alpha=2.0), "alpha must be in \\[0, 1\\]"),
    ("hybrid", dict(zo_lr=0.0), "zo_lr must be > 0"),
    ("hybrid", dict(fo="zo-sgd"), "HybridFOZO needs a gradient-based fo"),
]


@pytest.mark.parametrize("name,kw,match", BAD, ids=[f"{n}-{list(k)[0]}" for n, k, _ in BAD])
def test_bad_hyperparameter_refused(name, kw, match):
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=match) as err:
        optimizers.make(name, [w], **{"lr": 1e-3, **kw})
    msg = str(err.value)
    if "must be" in msg:
        assert "got" in msg and "try" in msg, msg


def test_bad_drift_arguments():
    w = torch.ones(3)
    with pytest.raises(ValueError, match="cycles must be an integer >= 1, got 0"):
        measure_drift([w], cycles=0)
    with pytest.raises(ValueError, match="mu must be > 0"):
        measure_drift([w], mu=0.0)
    with pytest.raises(ValueError, match="dist must be one of"):
        measure_drift([w], dist="cauchy")
