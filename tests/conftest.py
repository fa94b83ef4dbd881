"""Shared fixtures: generated tiny models (session-scoped, made once) and the reference recipe."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/reference.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The default CPU dtype follows the CPU (bf16 where it is native, e5v/backends/routes.py). Exact-parity tests
# must mean the same on every machine CI lands on, so the suite pins fp32; tests/test_routes.py checks the table.
os.environ["E5V_DTYPE"] = "fp32"

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A random LLaVA-NeXT with e5-v's quirks (seed 0)."""
    from e5v.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-e5v"), seed=0)


@pytest.fixture(scope="session")
def model(tiny_model_path):
    """E5V on the tiny model, torch fp32 (shared: do not mutate)."""
    from e5v import E5V

    return E5V.from_pretrained(tiny_model_path)


@pytest.fixture(scope="session")
def reference(tiny_model_path):
    """The reference recipe (tests/reference.py) on the same tiny model."""
    from reference import Reference

    return Reference(tiny_model_path)


@pytest.fixture(scope="session")
def images():
    """Generated sample images of several sizes and aspect ratios, keyed by name."""
    from e5v.testing import sample_images

    return sample_images()


@pytest.fixture
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
