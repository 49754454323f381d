"""Search: a text query is rendered to an image, encoded by the pages' own encoder, and ranked by MaxSim.

    from search import Searcher
    for hit in Searcher.from_settings().search("quarterly revenue"):
        print(hit.score, hit.source, hit.page)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from PIL import Image

from config import Settings
from core.model import OcrModel
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
    query_tokens: int  # how many query tokens took part in the MaxSim score

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        self.model = model
        self.store = store
        self.settings = settings or Settings()
        self.store.bind(self.model.identity, create=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Searcher":
        s = settings or Settings()
        return cls(OcrModel.from_settings(s), open_store(s), s)

    def search(self, text: str, top_k: int | None = None, doc_id: str | None = None) -> list[Hit]:
        return self.search_image(render_query(text, self.settings.query_font_px), top_k, doc_id)

    def search_image(self, image: Image.Image, top_k: int | None = None, doc_id: str | None = None) -> list[Hit]:
        tokens = to_numpy(self.model.encode_pages([image])[0])
        points = self.store.search(tokens, top_k or self.settings.top_k, doc_id)
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


__all__ = ["Searcher", "Hit"]
