"""Search: a text query is rendered to an image, encoded by the pages' own encoder, and ranked by MaxSim.

Query tokens that carry only blank canvas are dropped before the search: found by content, as the tokens most
like those the encoder makes of a blank canvas of the query's size (Settings.blank_similarity).

    from search import Searcher
    for hit in Searcher.from_settings().search("quarterly revenue"):
        print(hit.score, hit.source, hit.page)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from PIL import Image

from config import Settings
from core.model import OcrModel
from core.pooling import keep_mask
from core.render import render_query
from core.store import PageStore, open_store
from core.tensors import to_numpy


@dataclass
class Hit:
    point_id: str
    doc_id: str
    source: str
    page: int
    score: float
    query_tokens: int  # how many query tokens took part in the MaxSim score (blank-canvas tokens are left out)

    def to_dict(self) -> dict:
        return asdict(self)


def _blank_canvas(size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, "white")


class Searcher:
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        self.model = model
        self.store = store
        self.settings = settings or Settings()
        self.store.bind(self.model.identity, create=False)
        self._blank: dict[tuple[int, int], object] = {}  # image size -> a blank canvas's tokens

    BLANK_SIZES = 16  # blank canvases remembered (rendered queries differ only in height)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Searcher":
        s = settings or Settings()
        return cls(OcrModel.from_settings(s), open_store(s), s)

    def search(
        self, text: str, top_k: int | None = None, doc_id: str | None = None, *, exact: bool = False
    ) -> list[Hit]:
        return self.search_image(render_query(text, self.settings.query_font_px), top_k, doc_id, exact=exact)

    def search_image(
        self, image: Image.Image, top_k: int | None = None, doc_id: str | None = None, *, exact: bool = False
    ) -> list[Hit]:
        """`exact=True` ranks every page by exact MaxSim instead of taking the fast path (for comparison)."""
        tokens = self.query_tokens(image)
        points = self.store.search(tokens, top_k or self.settings.top_k, doc_id, exact=exact)
        return [
            Hit(
                point_id=p.point_id,
                doc_id=p.payload["doc_id"],
                source=p.payload["source"],
                page=int(p.payload["page"]),
                score=float(p.score),
                query_tokens=int(tokens.shape[0]),
            )
            for p in points
        ]

    def query_tokens(self, image: Image.Image):
        """The query image's tokens, less those that carry only blank canvas (see the module docstring)."""
        similarity = self.settings.blank_similarity
        if similarity >= 1.0:
            return to_numpy(self.model.encode_pages([image])[0])
        size = image.size
        if size in self._blank:
            tokens = to_numpy(self.model.encode_pages([image])[0])
        else:  # one model call for the query and its blank canvas
            tokens, blank = (to_numpy(t) for t in self.model.encode_pages([image, _blank_canvas(size)]))
            if len(self._blank) >= self.BLANK_SIZES:
                self._blank.pop(next(iter(self._blank)))
            self._blank[size] = blank
        return tokens[keep_mask(tokens, self._blank[size], similarity)]


__all__ = ["Searcher", "Hit"]
