"""Intervals that respect the metric (optigrade.analysis.intervals): accuracy intervals never
leave [0, 1] (random 0/1 matrices, degenerate ones included), the two-way bootstrap covers the
truth on a simulated binomial, the perplexity's geometric mean and its interval are > 0 and
equal the closed form, old tables fall back to the seeds-only bootstrap, and a seed fixes it all."""

import math

import numpy as np
import pandas as pd
import pytest

from optigrade.analysis.intervals import (KINDS, accuracy_facts_seeds, accuracy_seeds, interval_for, matches_matrix,
                                          per_seed_text, perplexity_geometric, t_interval)
from optigrade.analysis.report import _toy_results, summarize


def _random_matrices(rng, n):
    """Random seeds × facts 0/1 matrices: 1–6 seeds, 1–60 facts, success rates including 0 and 1
    (all-0, all-1), tiny and extreme rates, and one-seed / one-fact shapes."""
    for i in range(n):
        k = 1 if i % 7 == 0 else int(rng.integers(1, 7))
        m = 1 if i % 11 == 0 else int(rng.integers(1, 61))
        p = [0.0, 1.0, 0.01, 0.99, 0.5, rng.random()][i % 6]
        yield (rng.random((k, m)) < p).astype(int)


def test_accuracy_interval_never_leaves_the_unit_interval():
    rng = np.random.default_rng(1)
    seen = set()
    for x in _random_matrices(rng, 400):
        iv = accuracy_facts_seeds(x, n_boot=300, seed=int(rng.integers(1 << 30)))
        assert 0.0 <= iv.low <= iv.high <= 1.0, (x, iv)
        assert iv.estimate == pytest.approx(x.mean(axis=1).mean())
        assert iv.n == x.shape[0] and iv.n_facts == x.shape[1] and iv.kind == "bootstrap facts×seeds"
        seen.add((x.shape[0] == 1, x.shape[1] == 1, int(x.min()), int(x.max())))
        fb = accuracy_seeds(x.mean(axis=1), n_boot=300)
        assert (x.shape[0] == 1 and fb.low != fb.low) or 0.0 <= fb.low <= fb.high <= 1.0
    # the degenerate cases were drawn: one seed, one fact, all-0, all-1
    assert {(True, False), (False, True), (True, True)} <= {s[:2] for s in seen}
    assert any(s[2:] == (0, 0) for s in seen) and any(s[2:] == (1, 1) for s in seen)


@pytest.mark.parametrize("x, want", [(np.zeros((3, 10), int), (0.0, 0.0, 0.0)), (np.ones((3, 10), int), (1.0, 1.0, 1.0)),
                                     (np.array([[1]]), (1.0, 1.0, 1.0)), (np.array([[0], [1]]), (0.5, 0.0, 1.0))])
def test_accuracy_edge_cases(x, want):
    iv = accuracy_facts_seeds(x)
    assert (iv.estimate, iv.low, iv.high) == want


def test_one_seed_still_has_a_facts_interval_and_one_fact_a_seeds_interval():
    one_seed = accuracy_facts_seeds(np.array([[1, 0] * 10]))
    assert 0.2 <= one_seed.low < 0.5 < one_seed.high <= 0.8  # binomial(20, .5): ≈ 0.5 ± 0.22
    one_fact = accuracy_facts_seeds(np.array([[0], [1], [1], [0]]))
    assert (one_fact.low, one_fact.high) == (0.0, 1.0)


def test_two_way_bootstrap_covers_a_simulated_binomial():
    """Facts with their own difficulty p_i ~ Beta(2, 5) (mean 2/7), seeds scoring each fact
    Bernoulli(p_i): the interval for the population accuracy 2/7 covers it in at least 85% of 300
    studies of 3 seeds × 40 facts (the two-way bootstrap is conservative: nominal 95%), and is
    not vacuous (mean width < 0.4)."""
    rng = np.random.default_rng(0)
    truth, cover, widths = 2 / 7, 0, []
    for _ in range(300):
        p = rng.beta(2, 5, size=40)
        x = (rng.random((3, 40)) < p).astype(int)
        iv = accuracy_facts_seeds(x, n_boot=500, seed=int(rng.integers(1 << 30)))
        cover += iv.low <= truth <= iv.high
        widths.append(iv.high - iv.low)
    assert cover / 300 >= 0.85, cover
    assert np.mean(widths) < 0.4, np.mean(widths)


def test_facts_are_resampled_jointly_across_seeds():
    """Seeds that agree fact by fact vary only through the facts; the joint draw keeps the
    interval of two identical seeds equal to that of one (an independent draw per seed would
    shrink it by √2)."""
    row = (np.arange(30) % 3 == 0).astype(int)
    a = accuracy_facts_seeds(row[None, :], n_boot=4000, seed=3)
    b = accuracy_facts_seeds(np.stack([row, row]), n_boot=4000, seed=3)
    assert b.high - b.low == pytest.approx(a.high - a.low, abs=0.04)


def test_perplexity_geometric_mean_and_interval_closed_form():
    v = np.array([5.0, 8.0, 20.0])
    iv = perplexity_geometric(v)
    logs = np.log(v)
    h = 4.302652729911275 * logs.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert iv.estimate == pytest.approx(math.exp(logs.mean())) == pytest.approx(80 ** (1 / 3) * 10 ** (1 / 3))
    assert (iv.low, iv.high) == (pytest.approx(math.exp(logs.mean() - h)), pytest.approx(math.exp(logs.mean() + h)))
    assert iv.low > 0 and t_interval(v).low < 0  # the arithmetic t-interval would go below 0
    rng = np.random.default_rng(0)
    for _ in range(200):  # never ≤ 0, for any spread
        w = np.exp(rng.normal(0, rng.uniform(0.01, 5), size=int(rng.integers(2, 6))))
        assert perplexity_geometric(w).low > 0
    wide = perplexity_geometric([1.5, 900.0])  # exp of the log interval would reach below 1: clipped to the range
    assert wide.low == 1.0 and wide.high > 900 and perplexity_geometric([0.5, 900.0]).low < 1
    assert math.isnan(perplexity_geometric([4.0]).low)  # one seed: no interval
    with pytest.raises(ValueError, match="perplexities must be > 0"):
        perplexity_geometric([4.0, 0.0])


def test_t_interval_closed_form_and_symmetric_half_width():
    iv = t_interval([1.0, 2.0, 4.0])
    h = 4.302652729911275 * np.std([1.0, 2.0, 4.0], ddof=1) / math.sqrt(3)
    assert (iv.low, iv.high) == (pytest.approx(7 / 3 - h), pytest.approx(7 / 3 + h))
    assert iv.half_width == pytest.approx(h) and math.isnan(accuracy_seeds([0.1, 0.2]).half_width)


def test_determinism_for_a_seed():
    x = (np.random.default_rng(5).random((3, 25)) < 0.4).astype(int)
    assert accuracy_facts_seeds(x, seed=7) == accuracy_facts_seeds(x, seed=7)
    assert accuracy_facts_seeds(x, seed=7) != accuracy_facts_seeds(x, seed=8)
    pd.testing.assert_frame_equal(summarize(_toy_results()), summarize(_toy_results()))


def test_old_tables_fall_back_to_the_seeds_bootstrap():
    new, old = summarize(_toy_results()), summarize(_toy_results(per_example=False))
    acc = new["quantity"].str.endswith("_acc")
    assert set(new.loc[acc, "interval_kind"]) == {"bootstrap facts×seeds"}
    assert set(old.loc[acc, "interval_kind"]) == {"bootstrap seeds"}
    pd.testing.assert_series_equal(new["estimate"], old["estimate"])  # the point is the same
    for s in (new, old):
        assert ((s["ci_low"] >= 0) & (s["ci_high"] <= 1) & (s["ci_low"] <= s["ci_high"])).all()
    # a group where only some seeds carry matches bootstraps the seeds (and says so)
    r = _toy_results()
    r.loc[r["seed"] == 1, "per_example"] = None
    with pytest.warns(UserWarning, match="bootstrap the seeds only"):
        mixed = summarize(r)
    assert set(mixed.loc[acc, "interval_kind"]) == {"bootstrap seeds"}


def test_summary_columns_by_quantity():
    r = _toy_results()
    extra = r[r["quantity"] == "retain_acc"].assign(quantity="general_ppl", value=lambda d: 5 + 10 * d["seed"],
                                                     per_example=None)
    nll = extra.assign(quantity="forget_nll", value=lambda d: 1.0 + d["seed"])
    s = summarize(pd.concat([r, extra, nll], ignore_index=True))
    ppl = s[(s["quantity"] == "general_ppl")].iloc[0]
    assert ppl["interval_kind"] == "geometric t" and ppl["estimate"] == pytest.approx(math.sqrt(5 * 15))
    assert ppl["mean"] == pytest.approx(10) and ppl["ci_low"] > 0 and math.isnan(ppl["ci95"])
    assert ppl["per_seed"] == "5/15"
    t = s[(s["quantity"] == "forget_nll")].iloc[0]
    assert t["interval_kind"] == "t" and t["ci95"] == pytest.approx(12.706204736 * math.sqrt(0.5) / math.sqrt(2))
    assert t["ci_low"] == pytest.approx(1.5 - t["ci95"]) and t["ci95_high"] == t["ci_high"]
    assert set(s["interval_kind"]) <= set(KINDS)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one length"):
        matches_matrix(["010", "01"])
    with pytest.raises(ValueError, match=r"only '0'/'1'.*'2'"):
        matches_matrix(["012"])
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        accuracy_seeds([0.5, 1.5])
    with pytest.raises(ValueError, match="not the per-example accuracies"):
        interval_for("forget_acc", [0.5, 0.5], ["11", "10"])
    with pytest.raises(ValueError, match="0 or 1"):
        accuracy_facts_seeds([[0, 2]])
    assert per_seed_text([0.25, 2 / 3]) == "0.25/0.666667"
