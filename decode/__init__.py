"""Decode: a stored page's tokens go straight into the matched decoder, which regenerates the page's text.

    from decode import Decoder
    print(Decoder.from_settings().decode(hit.point_id))
"""

from __future__ import annotations

from PIL import Image

from config import Settings
from core.model import OcrModel, prompt_for
from core.store import PageStore, open_store
from core.tensors import to_torch


class PointNotFoundError(LookupError):
    pass


class Decoder:
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        self.model = model
        self.store = store
        self.settings = settings or Settings()
        self.store.bind(self.model.identity, create=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "Decoder":
        s = settings or Settings()
        return cls(OcrModel.from_settings(s), open_store(s), s)

    def tokens(self, point_id: str):
        """The page's stored token set, exactly as the encoder produced it, in the model's dtype."""
        point = self.store.get(point_id, with_tokens=True)
        if point is None or point.tokens is None:
            raise PointNotFoundError(f"no page with point id {point_id!r} in collection {self.store.collection!r}")
        return to_torch(point.tokens, self.model.dtype)

    def decode(self, point_id: str, mode: str = "ocr") -> str:
        """Regenerate a stored page's text from its tokens alone: no source file, no re-encoding."""
        prompt = prompt_for(mode)
        return self.model.generate_from_tokens(self.tokens(point_id), prompt, self.settings.max_new_tokens)

    def decode_image(self, image: Image.Image, mode: str = "ocr") -> str:
        """The ordinary pixel path, for comparison with `decode`."""
        return self.model.generate_from_image(image, prompt_for(mode), self.settings.max_new_tokens)


__all__ = ["Decoder", "PointNotFoundError"]
