"""Search: a text query is rendered to an image, encoded by the pages' own encoder, and ranked by MaxSim; where
pages have text, BM25 over that text ranks them too, and Qdrant fuses the two rankings (search modes).

Query tokens that carry only blank canvas are dropped before the search: found by content, as the tokens most
like those the encoder makes of a blank canvas of the query's size (Settings.blank_similarity). Those reference
tokens are encoded once per model and canvas size and kept under DATA_DIR (search/blank.py); all the views of a
query, and a blank canvas not yet known, are encoded in one model call.

    from search import Searcher
    for hit in Searcher.from_settings().search("quarterly revenue"):
        print(hit.score, hit.source, hit.page)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from config import Settings
from core.model import OcrModel
from core.pooling import keep_mask
from core.render import RenderedQuery, render_views
from core.stage import Stage
from core.store import PageStore
from core.tensors import one_blas_thread, to_numpy
from search import plan
from search.blank import BlankCanvases
from search.fusion import FusionWeights, resolve
from search.plan import SEARCH_MODES, check_mode


@dataclass
class Hit:
    point_id: str
    doc_id: str
    source: str
    page: int
    score: float  # MaxSim (visual, rerank), BM25 (text) or the reciprocal rank fusion score (hybrid)
    query_tokens: int  # query tokens that took part in MaxSim (blank-canvas tokens are left out; 0 in text mode)
    mode: str = "visual"
    signals: list[str] = field(default_factory=list)  # which signals found the page: "visual", "text"

    def to_dict(self) -> dict:
        return asdict(self)


def _blank_canvas(size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, "white")


class Searcher(Stage):
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        super().__init__(model, store, settings)
        self.store.bind(self.model.identity, create=False)
        self._has_text = False
        self._fusion: FusionWeights | None = None
        self._blank: BlankCanvases | None = None

    def default_mode(self) -> str:
        """hybrid once any page has text that BM25 can find, else visual."""
        self._has_text = self._has_text or self.store.text_pages() > 0  # pages keep their text once they have it
        return "hybrid" if self._has_text else "visual"

    def fusion(self) -> FusionWeights:
        """The weights hybrid search fuses the two rankings with (search/fusion.py: settings set explicitly, else
        those calibrated for the collection, else the defaults)."""
        if self._fusion is None:
            self._fusion = resolve(self.settings, self.store.record())
        return self._fusion

    def render(self, text: str) -> RenderedQuery:
        """The text drawn over one or more views (core.render.render_views), with what could not be drawn."""
        return render_views(text, self.settings.query_font_px)

    def encode_query(self, text: str | RenderedQuery):
        """The query's tokens: the text rendered (or already rendered by render) and its views encoded like pages,
        in one model call; the tokens of all views together, so MaxSim uses them all."""
        rendered = text if isinstance(text, RenderedQuery) else self.render(text)
        return np.concatenate(self.images_tokens(rendered.views))

    def search(
        self,
        text: str,
        top_k: int | None = None,
        doc_id: str | None = None,
        *,
        mode: str | None = None,
        exact: bool = False,
        tokens=None,
        fusion: FusionWeights | None = None,
    ) -> list[Hit]:
        """The best pages for `text` by `mode` (visual, text, hybrid or rerank; None: hybrid when the collection
        has text, else visual). `tokens` may hold the query's tokens from `encode_query`, to encode only once;
        `fusion` the weights hybrid fuses with (default: `self.fusion()`)."""
        mode = mode or self.default_mode()
        check_mode(mode)
        if mode == "text":
            tokens = None  # BM25 alone: the query is not rendered, nor the model loaded
        elif tokens is None:
            tokens = self.encode_query(text)
        limit = top_k or self.settings.top_k
        weights = fusion or (self.fusion() if mode == "hybrid" else None)
        points = plan.search(self.store, tokens, limit, doc_id, exact=exact, text_query=text, mode=mode, fusion=weights)
        return self._hits(points, tokens, mode)

    def search_image(
        self, image: Image.Image, top_k: int | None = None, doc_id: str | None = None, *, exact: bool = False
    ) -> list[Hit]:
        """The best pages for an image query, by MaxSim alone. `exact=True` ranks every page by exact MaxSim
        instead of taking the fast path (for comparison)."""
        tokens = self.query_tokens(image)
        points = plan.search(self.store, tokens, top_k or self.settings.top_k, doc_id, exact=exact)
        return self._hits(points, tokens, "visual")

    @staticmethod
    def _hits(points, tokens, mode: str) -> list[Hit]:
        return [
            Hit(
                point_id=p.point_id,
                doc_id=p.payload["doc_id"],
                source=p.payload["source"],
                page=int(p.payload["page"]),
                score=float(p.score),
                query_tokens=0 if tokens is None else int(tokens.shape[0]),
                mode=mode,
                signals=p.signals,
            )
            for p in points
        ]

    def query_tokens(self, image: Image.Image):
        """The query image's tokens, less those that carry only blank canvas (see the module docstring)."""
        return self.images_tokens([image])[0]

    def images_tokens(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Each image's tokens less its blank-canvas ones: the images, and a blank canvas of each size whose
        tokens are not known yet, encoded in one model call."""
        images = list(images)
        similarity = self.settings.blank_similarity
        if similarity >= 1.0:
            return [to_numpy(t) for t in self.model.encode_pages(images, batch_size=len(images))]
        blanks = self.blank_canvases()
        known = {size: blanks.get(size) for size in dict.fromkeys(im.size for im in images)}
        missing = [size for size, tokens in known.items() if tokens is None]
        batch = images + [_blank_canvas(size) for size in missing]
        encoded = [to_numpy(t) for t in self.model.encode_pages(batch, batch_size=len(batch))]
        for size, tokens in zip(missing, encoded[len(images) :], strict=True):
            known[size] = blanks.put(size, tokens)
        with one_blas_thread():
            return [t[keep_mask(t, known[im.size], similarity)] for t, im in zip(encoded, images, strict=False)]

    def blank_canvases(self) -> BlankCanvases:
        if self._blank is None:
            m, s = self.model, self.settings
            key = BlankCanvases.key(m.name, m.revision, str(m.dtype))
            self._blank = BlankCanvases(s.data_dir, key, m.dim)
        return self._blank


__all__ = ["Searcher", "Hit", "SEARCH_MODES"]
