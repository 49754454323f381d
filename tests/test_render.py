"""Query rendering: every script DeepSeek-OCR reads is drawn with real glyphs, in the right order and direction, and
what cannot be drawn or does not fit is reported."""

from __future__ import annotations

import logging
import unicodedata

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from core import fonts
from core.fonts import Face, MissingFontError
from core.render import (
    CANVAS_WIDTH,
    DEFAULT_FONT_PX,
    MARGIN,
    MAX_VIEWS,
    QueryTooLongError,
    render_query,
    render_views,
)

SAMPLES = {
    "latin": "café Zürich, naïve façade, Ærøskøbing, Łódź, São Paulo, Hà Nội, İstanbul, 12,5 €",
    "greek": "Η γρήγορη καφέ αλεπού πηδά πάνω από τον σκύλο (Αθήνα, 2024)",
    "cyrillic": "Съешь же ещё этих мягких французских булок, Київ, Београд",
    "arabic": "مرحبا بالعالم، تقرير الإيرادات السنوية لعام 2024",
    "hebrew": "שלום עולם, דוח הכנסות שנתי לשנת 2024",
    "urdu": "پاکستان کی قومی زبان اردو ہے",  # letters DejaVu Sans lacks: Noto Sans Arabic draws the run
    "chinese": "北京市人民政府 2024年度报告",
    "japanese": "東京の天気予報を教えてください",
    "korean": "서울특별시 한국어 문장입니다",
    "devanagari": "हिन्दी भाषा",
    "mixed": "The word سلام means peace, שלום too; 東京 is Tokyo and Москва is Moscow",
}
MISSING = "\U0001f980"  # CRAB: an emoji no installed font has (DejaVu Sans has the older emoticons, not this one)
UNUSED = "\ue000"  # a private-use character: every font draws its .notdef box for it


def ink(image: Image.Image) -> np.ndarray:
    """Darkness (0 white .. 255 black) of an image."""
    return 255 - np.asarray(image.convert("L"), dtype=np.int16)


def glyph(face: Face, ch: str, px: int = 24) -> np.ndarray:
    image = Image.new("L", (3 * px, 2 * px), 255)
    ImageDraw.Draw(image).text((px // 2, 3 * px // 2), ch, fill=0, font=face.font(px), anchor="ls")
    return ink(image)


@pytest.mark.parametrize("name", SAMPLES)
def test_every_script_is_drawn_with_real_glyphs(name):
    rendered = render_views(SAMPLES[name])
    assert rendered.missing == [] and rendered.warnings == []
    assert len(rendered.views) == 1 and rendered.views[0].width == CANVAS_WIDTH
    for run in rendered.runs:
        notdef = glyph(run.face, UNUSED)
        assert notdef.sum() > 0  # the control: a character the font lacks does draw its box
        for ch in set(run.text):
            if ch == " " or unicodedata.category(ch)[0] in "MC":
                continue  # spaces, marks and format characters have no glyph of their own
            drawn = glyph(run.face, ch)
            assert drawn.sum() > 0, (name, ch, run.face.family)
            assert not np.array_equal(drawn, notdef), (name, ch, run.face.family)
        # and the view has ink where the run was placed
        left, right = int(run.x), int(np.ceil(run.x + run.width))
        assert ink(rendered.views[run.view])[:, left:right].max() > 128, (name, run.text)


@pytest.mark.parametrize("name", ["latin", "greek", "cyrillic", "arabic", "hebrew"])
def test_dejavu_sans_draws_what_it_covers(name):
    assert render_views(SAMPLES[name]).fonts == [fonts.PRIMARY]


@pytest.mark.parametrize(
    "name, family",
    [
        ("chinese", "Noto Sans CJK SC"),
        ("japanese", "Noto Sans CJK JP"),
        ("korean", "Noto Sans CJK KR"),
        ("urdu", "Noto Sans Arabic"),
        ("devanagari", "Noto Sans Devanagari"),
    ],
)
def test_noto_draws_what_dejavu_sans_lacks(name, family):
    assert family in render_views(SAMPLES[name]).fonts


def test_cjk_characters_get_ink_each():
    rendered = render_views("東京の天気予報")
    (run,) = rendered.runs
    darkness = ink(rendered.views[0])
    cell = run.width / len(run.text)  # full-width characters: one em each
    assert cell == pytest.approx(DEFAULT_FONT_PX)
    for i in range(len(run.text)):
        left = int(run.x + i * cell)
        assert darkness[:, left + 1 : left + int(cell) - 1].max() > 128, run.text[i]


def test_right_to_left_word_starts_at_the_right_end():
    word = "שלום"  # shin lamed vav final-mem: shin, the first letter, must be the rightmost
    view = ink(render_query(word))
    cols = np.nonzero(view.max(axis=0) > 64)[0]
    assert cols[-1] >= CANVAS_WIDTH - MARGIN - 2  # a right-to-left query is right-aligned
    first, last = ink(render_query("ש")), ink(render_query("ם"))

    def likeness(letter: np.ndarray, at_right: bool) -> float:
        """Mean difference between the letter and the same width at one end of the word, both cropped to ink."""
        letter_cols = np.nonzero(letter.max(axis=0) > 64)[0]
        width = letter_cols[-1] - letter_cols[0] + 1
        end = cols[-1] + 1 if at_right else cols[0] + width
        part = view[:, end - width : end]
        mine = letter[:, letter_cols[0] : letter_cols[0] + width]
        return float(np.abs(part - mine).mean())

    assert likeness(first, at_right=True) < likeness(last, at_right=True)
    assert likeness(last, at_right=False) < likeness(first, at_right=False)


def test_arabic_letters_are_joined():
    word = "سلام"
    (run,) = render_views(word).runs
    isolated = sum(render_views(letter).runs[0].width for letter in word)
    assert run.rtl and run.width < isolated - 3  # joined forms are narrower than isolated ones side by side
    # the control: Hebrew letters do not join, so its word is as wide as its letters
    (hebrew,) = render_views("שלום").runs
    assert hebrew.width == pytest.approx(sum(render_views(letter).runs[0].width for letter in "שלום"), abs=0.5)


def test_an_arabic_word_keeps_its_place_in_an_english_sentence():
    rendered = render_views("The word سلام means peace")
    texts = [r.text for r in sorted(rendered.runs, key=lambda r: r.x)]
    assert texts == ["The word ", "سلام", " means peace"]
    assert [r.rtl for r in sorted(rendered.runs, key=lambda r: r.x)] == [False, True, False]


@pytest.mark.parametrize(
    "text",
    [
        "The word سلام means peace, שלום too",
        "Price: (مرحبا) 5-6 items",  # a bracket pair and numbers after Arabic
        "قال John Smith (المدير): الربح 100% في ٢٠٢٤",  # a right-to-left paragraph with English and digits inside
        "שלום עולם, דוח 2024 ב-IBM",
    ],
)
def test_runs_are_ordered_as_raqm_orders_a_whole_line(text):
    """Text in one font drawn run by run comes out exactly as Pillow's raqm lays out the whole line at once."""
    rendered = render_views(text)
    assert rendered.fonts == [fonts.PRIMARY] and {r.rtl for r in rendered.runs} == {False, True}  # drawn in runs
    first = min(rendered.runs, key=lambda r: r.x)
    whole = Image.new("RGB", rendered.views[0].size, "white")
    font = fonts.find(fonts.PRIMARY).font(DEFAULT_FONT_PX)
    ImageDraw.Draw(whole).text((first.x, first.baseline), text, fill="black", font=font, anchor="ls")
    assert np.array_equal(ink(rendered.views[0]), ink(whole))


def test_a_character_no_font_has_is_reported_and_left_out(caplog):
    with caplog.at_level(logging.WARNING, logger="tokendirect.render"):
        rendered = render_views(f"crab {MISSING} soup")
    assert rendered.missing == [MISSING]
    assert "U+1F980" in rendered.warnings[0] and "U+1F980" in caplog.text
    report = rendered.to_dict()
    assert report["missing"] == [{"char": MISSING, "codepoint": "U+1F980", "name": "CRAB"}]
    assert report["views"] == 1 and report["max_views"] == MAX_VIEWS
    assert np.array_equal(ink(rendered.views[0]), ink(render_query("crab soup")))  # no box, no gap
    with pytest.raises(ValueError, match="U\\+1F980"):
        render_views(MISSING * 3)


def test_a_long_query_is_drawn_over_several_views():
    words = "quarterly revenue by region and outlook for the coming year".split()
    text = " ".join(words[i % len(words)] for i in range(1800))  # about 10,000 characters
    rendered = render_views(text)
    assert 1 < len(rendered.views) <= MAX_VIEWS
    assert all(v.width == CANVAS_WIDTH and v.height <= CANVAS_WIDTH for v in rendered.views)
    assert rendered.views[0].height > CANVAS_WIDTH - 30  # a full view is full
    drawn = "".join(r.text for r in sorted(rendered.runs, key=lambda r: (r.view, r.baseline)))
    assert drawn.replace(" ", "") == text.replace(" ", "")  # every word drawn, in order
    assert render_query(text) == rendered.views[0]
    with pytest.raises(QueryTooLongError, match=f"limit is {MAX_VIEWS} views") as err:
        render_views(text * 3)
    assert "\n" not in str(err.value)


def test_lines_wrap_inside_the_canvas_and_blank_canvas_stays_small():
    rendered = render_views("東京の天気予報を教えてください。" * 12 + " and مرحبا بالعالم " * 8)
    assert all(r.x >= MARGIN - 1 and r.x + r.width <= CANVAS_WIDTH - MARGIN + 1 for r in rendered.runs)
    baselines = sorted({r.baseline for r in rendered.runs})
    assert len(baselines) > 2
    view = rendered.views[0]
    assert view.height - baselines[-1] < 3 * DEFAULT_FONT_PX  # cropped under the last line
    assert ImageOps.invert(view.convert("L")).getbbox()[1] <= MARGIN + 2  # and no blank band above the first


@pytest.fixture
def no_fonts(monkeypatch, tmp_path):
    """A machine without the font packages; gives the Debian paths of this one."""
    installed = dict(fonts.DEBIAN_FILES)
    monkeypatch.setattr(fonts, "DEBIAN_FILES", {k: tmp_path / v.name for k, v in fonts.DEBIAN_FILES.items()})
    monkeypatch.setattr(fonts, "_fontconfig", lambda family: None)
    fonts.find.cache_clear()
    fonts.other_noto.cache_clear()
    yield installed
    fonts.find.cache_clear()
    fonts.other_noto.cache_clear()


def test_a_missing_font_names_its_package(no_fonts):
    with pytest.raises(MissingFontError, match="fonts-dejavu-core"):
        render_views("invoice")


def test_a_missing_fallback_font_names_its_package(no_fonts, monkeypatch):
    dejavu = no_fonts[fonts.PRIMARY]
    monkeypatch.setattr(fonts, "DEBIAN_FILES", {**fonts.DEBIAN_FILES, fonts.PRIMARY: dejavu})
    assert render_views("invoice").fonts == [fonts.PRIMARY]  # DejaVu Sans alone draws Latin text
    with pytest.raises(MissingFontError, match="fonts-noto-cjk"):
        render_views("東京")
    with pytest.raises(MissingFontError, match="fonts-noto-core"):
        render_views("हिन्दी")


def test_without_raqm_latin_is_drawn_and_arabic_is_refused(monkeypatch):
    from PIL import ImageFont

    from core.render import ShapingUnavailableError

    monkeypatch.setattr(fonts, "layout_engine", lambda: ImageFont.Layout.BASIC)
    fonts._font.cache_clear()
    try:
        assert render_views(SAMPLES["latin"]).fonts == [fonts.PRIMARY]
        with pytest.raises(ShapingUnavailableError, match="libfribidi0"):
            render_views(SAMPLES["arabic"])
    finally:
        fonts._font.cache_clear()


def test_the_searcher_queries_with_the_tokens_of_every_view(settings, docs):
    from ingest import Ingestor
    from search import Searcher

    ingestor = Ingestor.from_settings(settings)
    try:
        ingestor.ingest([docs / "invoice.png"])
        searcher = Searcher(ingestor.model, ingestor.store, settings)
        text = " ".join(["invoice total due by the end of the month"] * 200)
        rendered = searcher.render(text)
        assert len(rendered.views) == 2
        tokens = searcher.encode_query(rendered)
        per_view = [searcher.query_tokens(view) for view in rendered.views]
        assert tokens.shape[0] == sum(t.shape[0] for t in per_view) > per_view[0].shape[0]
        assert (tokens[: per_view[0].shape[0]] == per_view[0]).all()
        # the second view's tokens are its own, not a copy of the first's
        assert not np.array_equal(per_view[1][:8], per_view[0][:8])
        (hit,) = searcher.search(text, top_k=1, mode="visual")
        assert hit.query_tokens == tokens.shape[0]
        with pytest.raises(QueryTooLongError):
            searcher.search(text * 4, top_k=1, mode="visual")
    finally:
        ingestor.store.close()
