"""Shared fixtures: the tiny random-weight checkpoint, settings on a temporary data dir, and test documents."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from config import Settings  # noqa: E402
from core.model import OcrModel  # noqa: E402
from core.testmodel import make_test_model  # noqa: E402

BACKENDS = ["edge", "memory"]


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
    return Settings(
        model=str(tiny_model_dir), data_dir=tmp_path / "data", device="cpu", batch_size=2, max_new_tokens=12,
        qdrant_url=None, qdrant_api_key=None,
    )


@pytest.fixture(params=BACKENDS)
def backend_settings(request, settings) -> Settings:
    """The same settings on each store engine: embedded edge shard, and qdrant-client in-process."""
    if request.param == "memory":
        return settings.model_copy(update={"qdrant_url": ":memory:"})
    return settings


@pytest.fixture
def model(settings) -> OcrModel:
    return OcrModel.from_settings(settings)


def page_image(lines: list[str], size=(850, 1100)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=24)
    for row, line in enumerate(lines):
        draw.text((60, 60 + row * 40), line, fill="black", font=font)
    return image


def write_pdf(path: Path, pages: list[list[str]]) -> Path:
    images = [page_image(lines) for lines in pages]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=100)
    return path


@pytest.fixture
def docs(tmp_path) -> Path:
    """A folder with a two-page PDF, a PNG and a two-frame TIFF: five pages in all."""
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "report.pdf", [["Annual report", "Revenue grew"], ["Outlook", "Risks ahead"]])
    page_image(["Invoice 42", "Total due 1,420"]).save(folder / "invoice.png")
    frames = [page_image(["Field notes", "gauge 7"]), page_image(["Heron colony", "48 nests"])]
    frames[0].save(folder / "notes.tiff", save_all=True, append_images=frames[1:])
    return folder
