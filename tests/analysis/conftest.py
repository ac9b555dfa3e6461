"""Small fixtures for the analysis tests: a 40-entity synthetic benchmark and a fresh tiny
Llama (random init, seeded) sized for it, plus a short-run study config."""

import copy

import pytest


@pytest.fixture(scope="session")
def small_bench():
    from optigrade.unlearning import SyntheticFacts

    return SyntheticFacts(n_entities=40)


@pytest.fixture(scope="session")
def small_model(small_bench):
    from optigrade.unlearning import TinyConfig, tiny_llama

    cfg = TinyConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    return tiny_llama(len(small_bench.tokenizer), cfg, seed=0, tokenizer=small_bench.tokenizer)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture
def snapshot():
    return _params


@pytest.fixture
def study_dict():
    """``study_dict(**overrides)``: a tiny study config as a YAML-like dict."""
    return small_study_dict


def small_study_dict(**over):
    d = {
        "name": "t",
        "objectives": ["graddiff"],
        "seeds": [0],
        "target": 0.0,
        "eval_every": 2,
        "benchmark_kwargs": {"n_entities": 40},
        "eval_retain": 20,
        "eval_general": 10,
        "optimizers": [{"name": "adam", "lr": 1.0e-3, "steps": 2}],
        "attacks": [{"kind": "quantize", "label": "rtn4", "bits": 4},
                    {"kind": "relearn", "label": "rl-half", "steps": 2, "lr": 1.0e-3, "protocol": "half"},
                    {"kind": "noise", "label": "noise", "sigma": 0.01}],
        "diagnostics": {"bits": [4]},
        # small budgets: the geometry stage's own tests (test_geometry.py) check its numbers
        "geometry": {"examples": 8, "k": 2, "lanczos_iter": 6, "trace_queries": 6, "sharpness_samples": 2,
                     "noise_scales": [1.0], "slice_points": 3, "interp_points": 3, "radius_samples": 10,
                     "uniform_samples": 2, "theory_queries": [1, 4], "theory_repeats": 2, "theory_reference_n": 1,
                     "theory_mus": [1.0e-3, 1.0e-2], "theory_samples": 4, "theory_trace_queries": 6},
    }
    d.update(over)
    return copy.deepcopy(d)
