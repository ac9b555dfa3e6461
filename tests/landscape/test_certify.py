"""Certified radius: SPEC §3.3's worked example and ceilings, bounds, the Probe path."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from optigrade import landscape as ls
from optigrade.landscape.certify import bernstein_upper, hoeffding_upper

from .conftest import MLP, mlp_batches, mlp_loss


def test_worked_example():
    p, r = ls.cohen_radius(99000, 100000, sigma=1.0, alpha=0.001)
    assert p == pytest.approx(0.98899, abs=5e-6)
    assert r == pytest.approx(2.29, abs=5e-3)


@pytest.mark.parametrize("n,ceiling", [(100, 1.50), (1000, 2.46), (10000, 3.20), (100000, 3.81)])
def test_ceilings(n, ceiling):
    assert ls.radius_ceiling(n, 0.001) == pytest.approx(ceiling, abs=5e-3)
    assert ls.cohen_radius(n, n, 1.0, 0.001)[1] == pytest.approx(ceiling, abs=5e-3)
    # stays-forgotten radius when no sample recovers the knowledge, τ = 1/2
    r = ls.radius_from_outcomes(np.zeros(n), 1.0, alpha=0.001, tau=0.5)
    assert r.radius == pytest.approx(ceiling, abs=5e-3) and r.bound == pytest.approx(1 - 0.001 ** (1 / n))


def test_stays_forgotten_formula_and_not_certified():
    x = np.r_[np.ones(30), np.zeros(970)]
    r = ls.radius_from_outcomes(x, 0.02, alpha=0.01, tau=0.2)
    ub = ls.clopper_pearson(30, 1000, 0.01, "upper")
    assert r.bound == ub and r.radius == pytest.approx(0.02 * (norm.ppf(0.2) - norm.ppf(ub)))
    assert not ls.radius_from_outcomes(np.ones(50), 0.02, tau=0.5).certified
    assert "l2 radius" in r.settings["radius_meaning"] and len(r.to_frame()) == 4


def test_bounded_outcomes_use_hoeffding_or_bernstein():
    x = np.full(400, 0.1)
    assert ls.radius_from_outcomes(x, 1.0).settings["bound"] == "bernstein"
    assert hoeffding_upper(x, 0.001) == pytest.approx(0.1 + np.sqrt(np.log(1000) / 800))
    assert bernstein_upper(x, 0.001) < hoeffding_upper(x, 0.001)  # zero variance
    with pytest.raises(ValueError, match="0/1"):
        ls.radius_from_outcomes(x, 1.0, bound="clopper-pearson")


def test_bounds_cover_at_level_alpha():
    rng = np.random.default_rng(0)
    p, n, a = 0.3, 200, 0.05
    miss = sum(ls.clopper_pearson(int(rng.binomial(n, p)), n, a, "upper") < p for _ in range(2000))
    assert miss / 2000 <= a + 0.02


def test_probe_path_and_callable_path():
    probe = ls.Probe(MLP(), mlp_batches(), mlp_loss)
    l0 = probe.loss()
    r = ls.certified_radius(probe, 1e-3, n=50, tau=0.5, loss_threshold=l0 - 1.0, alpha=0.01)
    assert r.certified and r.cost.loss == 50 and r.estimate == 0.0
    r2 = ls.certified_radius(lambda g: float(torch.rand(1, generator=g) < 0.01), 0.5, n=1000)
    assert r2.n == 1000 and 0 <= r2.radius


def test_cohen_certify():
    c, p, r = ls.cohen_certify(lambda g: 1 if torch.rand(1, generator=g) < 0.99 else 0, 1.0,
                               n0=50, n=2000, alpha=0.001)
    assert c == 1 and r == pytest.approx(norm.ppf(p))
    c, p, r = ls.cohen_certify(lambda g: int(torch.randint(0, 3, (1,), generator=g)), 1.0,
                               n0=50, n=500)
    assert c is None and np.isnan(r)
