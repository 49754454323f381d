"""What every stage (Ingestor, Searcher, Decoder) is made of: the model, the store and the settings. Closing a
stage gives its store back; stages opened in one process share one model and one store handle."""

from __future__ import annotations

from typing import TypeVar

from config import Settings
from core.model import OcrModel
from core.store import PageStore, open_store

S = TypeVar("S", bound="Stage")


class Stage:
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        self.model = model
        self.store = store
        self.settings = settings or Settings()

    @classmethod
    def from_settings(cls: type[S], settings: Settings | None = None) -> S:
        s = settings or Settings()
        return cls(OcrModel.from_settings(s), open_store(s), s)

    def close(self) -> None:
        self.store.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
