"""optigrade._lm, the one token NLL: against torch's cross-entropy (float64 reference), masks,
dtypes, and the fused summed_nll the landscape Probe uses."""

import math

import torch
import torch.nn.functional as F

from optigrade._lm import IGNORE, mean_nll, seq_nll, shifted, summed_nll, token_nll


def case(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[:, :2] = IGNORE          # prompt
    labels[1, 5:] = IGNORE          # padding
    labels[2, 1:] = IGNORE          # a sequence with no answer at all
    labels[2, 0] = 4                # (position 0 is never a target)
    return logits, labels


def reference(logits, labels):
    lg, lb = logits[:, :-1].double(), labels[:, 1:]
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=IGNORE,
                           reduction="none").reshape(lb.shape)


def test_token_nll_matches_cross_entropy_and_masks():
    logits, labels = case()
    nll, mask = token_nll(logits, labels)
    assert nll.shape == mask.shape == (3, 6)
    assert torch.equal(mask, labels[:, 1:] != IGNORE)
    assert torch.allclose(nll.double(), reference(logits, labels), atol=1e-6)
    assert (nll[~mask] == 0).all()


def test_mean_and_seq_nll():
    logits, labels = case()
    ref = reference(logits, labels)
    m = labels[:, 1:] != IGNORE
    assert math.isclose(mean_nll(logits, labels).item(), (ref.sum() / m.sum()).item(), rel_tol=1e-6)
    total, count = seq_nll(logits, labels)
    assert count.tolist() == m.sum(1).tolist() and count[2] == 0 and total[2] == 0
    assert torch.allclose(total.double(), ref.sum(1), atol=1e-5)
    # nothing counted: 0, not NaN
    assert mean_nll(logits, torch.full_like(labels, IGNORE)).item() == 0.0


def test_summed_nll_is_the_same_quantity():
    logits, labels = case()
    s, c = summed_nll(logits, labels)
    nll, mask = token_nll(logits, labels)
    assert c == int(mask.sum()) and math.isclose(s.item(), nll.sum().item(), rel_tol=1e-6)


def test_half_logits_are_upcast_full_kept():
    for dt in (torch.bfloat16, torch.float16):
        logits, labels = case(dt)
        assert shifted(logits, labels)[0].dtype == torch.float32
        assert token_nll(logits, labels)[0].dtype == torch.float32
    logits, labels = case(torch.float64)
    nll, _ = token_nll(logits, labels)
    assert nll.dtype == torch.float64
    assert torch.allclose(nll, reference(logits, labels) * (labels[:, 1:] != IGNORE), atol=1e-12)
