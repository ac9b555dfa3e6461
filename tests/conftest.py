"""Shared fixtures: the cached pretrained tiny Llama on the default synthetic benchmark."""

import copy
import os
from pathlib import Path

import pytest

os.environ.setdefault("OPTIGRADE_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "optigrade"))


@pytest.fixture(scope="session")
def bench():
    from optigrade.unlearning import SyntheticFacts

    return SyntheticFacts()


@pytest.fixture(scope="session")
def pretrained(bench):
    from optigrade.unlearning import pretrained_tiny

    model, path = pretrained_tiny(bench, progress=False)
    return model, path


@pytest.fixture
def tiny_model(pretrained):
    """A fresh copy of the pretrained tiny model (tests may modify it)."""
    return copy.deepcopy(pretrained[0])
