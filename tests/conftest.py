"""Shared fixtures: the tiny random-weight checkpoint, settings on a temporary data dir, and test documents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from config import Settings  # noqa: E402
from core.model import OcrModel  # noqa: E402
from core.testmodel import make_test_model  # noqa: E402
from tests.helpers import BACKENDS, make_docs, on_engine, settings_for  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory) -> Path:
    """Same classes and shapes, other weights: a different checkpoint the guard must refuse."""
    return make_test_model(tmp_path_factory.mktemp("other-model"), seed=1)


@pytest.fixture
def settings(tmp_path, tiny_model_dir) -> Settings:
    """The embedded engine, whatever TOKENDIRECT_QDRANT_URL says (the store contract reads that one itself)."""
    return settings_for(tiny_model_dir, tmp_path / "data")


@pytest.fixture(params=BACKENDS)
def backend_settings(request, settings) -> Settings:
    """The same settings on each store engine: embedded edge shard, and qdrant-client in-process."""
    return on_engine(settings, request.param)


@pytest.fixture
def model(settings) -> OcrModel:
    return OcrModel.from_settings(settings)


@pytest.fixture
def docs(tmp_path) -> Path:
    """A folder with a two-page PDF, a PNG and a two-frame TIFF: five pages in all."""
    return make_docs(tmp_path / "docs")
