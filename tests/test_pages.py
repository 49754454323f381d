"""Finding documents and turning them into pages."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pytest
from PIL import Image

from core.errors import InputError
from core.pages import count_pages, discover, render_pages, to_rgb
from tests.helpers import page_image, write_pdf


def test_discover_walks_folders_once_and_names_what_it_cannot_use(tmp_path):
    (tmp_path / "a").mkdir()
    page_image(["x"]).save(tmp_path / "a" / "UPPER.PNG")
    write_pdf(tmp_path / "a" / "doc.pdf", [["y"]])
    (tmp_path / "a" / "readme.md").write_text("not a page")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")  # a folder loop is named, not followed
    files, failures = discover(
        [tmp_path, tmp_path / "a" / "doc.pdf", tmp_path / "missing.pdf", tmp_path / "a" / "readme.md"]
    )
    assert sorted(f.name for f in files) == ["UPPER.PNG", "doc.pdf"]
    assert dict(failures) == {
        str(tmp_path / "missing.pdf"): "no such file or folder",
        str(tmp_path / "a" / "readme.md"): "unsupported file type '.md'",
        str(tmp_path / "a" / "loop"): f"folder loop: links back to {tmp_path / 'a'}",
    }


def test_pdf_pages_are_rasterized_to_the_global_view_size(tmp_path):
    pdf = write_pdf(tmp_path / "two.pdf", [["one"], ["two"]])
    pages = list(render_pages(pdf, "doc"))
    assert [p.page for p in pages] == [1, 2] and all(p.pages == 2 for p in pages)
    assert all(max(p.image.size) == 1024 and p.image.mode == "RGB" for p in pages)
    assert pages[0].point_id != pages[1].point_id


def test_multi_page_tiff_gives_every_frame(tmp_path):
    frames = [page_image([f"frame {k}"], size=(400, 500)) for k in range(3)]
    frames[0].save(tmp_path / "scan.tif", save_all=True, append_images=frames[1:])
    pages = list(render_pages(tmp_path / "scan.tif", "doc"))
    assert len(pages) == 3 and pages[2].image.tobytes() == frames[2].tobytes()


def test_transparent_areas_become_white_paper():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 0, 255))
    rgb = to_rgb(image)
    assert rgb.getpixel((1, 1)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (0, 0, 0)


def test_an_empty_file_is_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        count_pages(tmp_path / "empty.png")


def test_a_rasterizer_that_takes_too_long_fails_the_file_with_the_setting_named(tmp_path, monkeypatch):
    from core.pages import DEFAULT_LIMITS

    pdf = write_pdf(tmp_path / "slow.pdf", [["one"], ["two"]])
    # poppler's own tools, each held back 1 s before it starts: slower than the limit however busy the machine is
    # (with a limit of a millisecond and the real tools, a parent descheduled long enough found them finished)
    slow = tmp_path / "slow-poppler"
    slow.mkdir()
    for tool in ("pdfinfo", "pdftoppm"):
        (slow / tool).write_text(f'#!/bin/sh\nsleep 1 </dev/null >/dev/null 2>&1\nexec {shutil.which(tool)} "$@"\n')
        (slow / tool).chmod(0o755)
    hurried = replace(DEFAULT_LIMITS, raster_timeout=0.25)
    with monkeypatch.context() as held_back:
        held_back.setenv("PATH", f"{slow}{os.pathsep}{os.environ['PATH']}")
        with pytest.raises(InputError, match=r"reading the PDF timed out after 0.25 s \(TOKENDIRECT_RASTER_TIMEOUT\)"):
            count_pages(pdf, hurried)
        with pytest.raises(InputError, match=r"rasterizing pages 1-2 timed out after 0.25 s"):
            list(render_pages(pdf, "doc", limits=hurried, n=2))
        assert count_pages(pdf) == 2  # the same tools within the default limit
    assert len(list(render_pages(pdf, "doc"))) == 2  # with the default limit the same file is fine
