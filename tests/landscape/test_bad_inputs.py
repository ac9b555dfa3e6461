"""The bad-input table: every row is refused clearly, before any work."""

import pytest
import torch

from optigrade import landscape as ls
from optigrade.landscape import Probe

from .conftest import MLP, mlp_batches, mlp_loss


def _probe():
    return Probe(MLP(), mlp_batches(), mlp_loss)


def _nan_loss(m, b):
    return torch.tensor(float("nan"), dtype=torch.float64, requires_grad=True), 1


P = _probe()
n = P.numel
ROWS = [
    ("k=0", lambda: ls.top_eigenvalues(P, 0), "k must be"),
    ("k>params", lambda: ls.top_eigenvalues(P, n + 1), "parameter count"),
    ("which", lambda: ls.top_eigenvalues(P, 1, "XX"), "which must be"),
    ("pyhessian LA", lambda: ls.top_eigenvalues(P, 1, "LA", backend="pyhessian"), "largest-magnitude"),
    ("empty batches", lambda: Probe(MLP(), [], mlp_loss), "batches is empty"),
    ("no loss_fn, not LM", lambda: Probe(MLP(), mlp_batches()), "input_ids"),
    ("non-finite loss", lambda: Probe(MLP(), mlp_batches(), _nan_loss), "not finite"),
    ("hvp_mode", lambda: Probe(MLP(), mlp_batches(), mlp_loss, hvp_mode="x"), "hvp_mode"),
    ("filter selects nothing", lambda: Probe(MLP(), mlp_batches(), mlp_loss, param_filter="zzz"), "no trainable"),
    ("direction shape", lambda: P.hvp(torch.ones(n + 1)), "expected a flat vector"),
    ("direction 2-D", lambda: P.perturbed(torch.ones(1, n)).__enter__(), "expected a flat vector"),
    ("direction list", lambda: ls.slice_1d(P, [torch.ones(2)]), "does not match"),
    ("rho=0 worst", lambda: ls.worst_case_sharpness(P, 0.0), "rho must be"),
    ("rho<0 average", lambda: ls.average_sharpness(P, -1.0), "rho must be"),
    ("rho=0 sam", lambda: ls.sam_sharpness(P, 0), "rho must be"),
    ("scale and adaptive", lambda: ls.average_sharpness(P, 0.1, scale=torch.ones(n), adaptive=True),
     "pass one of them"),
    ("scale length", lambda: ls.average_sharpness(P, 0.1, scale=torch.ones(n - 1)), "probe.numel"),
    ("scale 2-D", lambda: ls.average_sharpness(P, 0.1, scale=torch.ones(1, n)), "probe.numel"),
    ("scale list shapes", lambda: ls.average_sharpness(P, 0.1, scale=[torch.ones(2)]), "shaped like"),
    ("scale nan", lambda: ls.average_sharpness(P, 0.1, scale=torch.full((n,), float("nan"))),
     "scale must be finite"),
    ("scale negative", lambda: ls.average_sharpness(P, 0.1, scale=-torch.ones(n)), "scale must be >= 0"),
    ("scale type", lambda: ls.average_sharpness(P, 0.1, scale=1.0), "scale must be a tensor"),
    ("norm", lambda: ls.worst_case_sharpness(P, 0.1, norm="l3"), "norm must be"),
    ("pac target", lambda: ls.pac_bayes_flatness(P, 0.0), "target must be"),
    ("sigma=0 certify", lambda: ls.certified_radius(P, 0.0, loss_threshold=1.0), "sigma must be"),
    ("sigma<0 ceiling", lambda: ls.radius_ceiling(100, 0.001, -1.0), "sigma must be"),
    ("alpha", lambda: ls.radius_from_outcomes([0, 1], 1.0, alpha=1.5), "alpha must be"),
    ("tau", lambda: ls.radius_from_outcomes([0, 1], 1.0, tau=1.0), "tau must be"),
    ("outcomes range", lambda: ls.radius_from_outcomes([2.0], 1.0), r"\[0, 1\]"),
    ("certify no metric", lambda: ls.certified_radius(P, 0.1), "loss_threshold"),
    ("hutchpp n%3", lambda: ls.hutchpp_trace(P, 10), "n % 3"),
    ("hutchinson n", lambda: ls.hutchinson_trace(P, 0), "positive integer"),
    ("density width", lambda: ls.spectral_density(P, width=-1.0), "standard deviation"),
    ("slice span", lambda: ls.slice_1d(P, span=(1, -1)), "low < high"),
    ("slice points", lambda: ls.slice_2d(P, points=(1, 3)), "points must be"),
    ("checkpoint shape", lambda: ls.interpolate(P, torch.ones(3), torch.ones(3)), "expected"),
    ("checkpoint names", lambda: ls.interpolate(P, {"x": torch.ones(1)}, {"x": torch.ones(1)}), "lacks parameters"),
]


@pytest.mark.parametrize("name,call,match", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_refused(name, call, match):
    before = P.cost()
    with pytest.raises((ValueError, TypeError), match=match):
        call()
    assert P.cost() == before  # refused before any work
