"""Decode: a stored page's tokens go straight into the matched decoder, which regenerates the page's text.

from decode import Decoder
print(Decoder.from_settings().decode(hit.point_id))
"""

from __future__ import annotations

import logging

from PIL import Image

from config import Settings
from core.errors import PointNotFoundError, StoreError
from core.model import OcrModel, prompt_for
from core.stage import Stage
from core.store import PagePoint, PageStore
from core.tensors import to_torch

PREVIEW_CHARS = 200  # decoded text kept in the payload (`text_preview`), for the dashboard

log = logging.getLogger("tokendirect.decode")


class Decoder(Stage):
    def __init__(self, model: OcrModel, store: PageStore, settings: Settings | None = None):
        super().__init__(model, store, settings)
        self.store.bind(self.model.identity, create=False)

    def page(self, point_id: str) -> dict:
        """A stored page's payload (doc_id, source, page, ...), without its tokens."""
        point = self.store.get(point_id, with_tokens=False)
        if point is None:
            raise PointNotFoundError(f"no page with point id {point_id!r} in collection {self.store.collection!r}")
        return point.payload

    def tokens(self, point_id: str):
        """The page's stored token set, exactly as the encoder produced it, in the model's dtype."""
        return to_torch(self._point(point_id).tokens, self.model.dtype)

    def decode(self, point_id: str, mode: str = "ocr") -> str:
        """Regenerate a stored page's text from its tokens alone: no source file, no re-encoding.
        The text's first characters are kept in the page's payload as `text_preview`."""
        prompt = prompt_for(mode)
        point = self._point(point_id)
        tokens = to_torch(point.tokens, self.model.dtype)
        text = self.model.generate_from_tokens(tokens, prompt, self.settings.max_new_tokens)
        self._keep_preview(point, text, mode)
        return text

    def decode_ids(self, point_id: str, mode: str = "ocr") -> list[int]:
        """The token ids the decoder generates from a stored page's tokens (`decode` is their text); nothing is
        saved."""
        tokens = to_torch(self._point(point_id).tokens, self.model.dtype)
        return self.model.generate_ids_from_tokens(tokens, prompt_for(mode), self.settings.max_new_tokens)

    def _point(self, point_id: str) -> PagePoint:
        point = self.store.get(point_id, with_tokens=True)
        if point is None or point.tokens is None:
            raise PointNotFoundError(f"no page with point id {point_id!r} in collection {self.store.collection!r}")
        return point

    def _keep_preview(self, point: PagePoint, text: str, mode: str) -> None:
        """Best effort: a store this process may only read (a read-only API key) still decodes."""
        preview = {"text_preview": text[:PREVIEW_CHARS], "text_mode": mode}
        if not text or all(point.payload.get(k) == v for k, v in preview.items()):
            return  # nothing to add: skip the write
        try:
            self.store.set_payload(point.point_id, preview)
        except StoreError as exc:
            log.warning("the text preview was not saved: %s", exc)

    def decode_image(self, image: Image.Image, mode: str = "ocr") -> str:
        """The ordinary pixel path, for comparison with `decode`."""
        return self.model.generate_from_image(image, prompt_for(mode), self.settings.max_new_tokens)

    def decode_image_ids(self, image: Image.Image, mode: str = "ocr") -> list[int]:
        """The token ids of the pixel path, for comparison with `decode_ids`."""
        return self.model.generate_ids_from_image(image, prompt_for(mode), self.settings.max_new_tokens)


__all__ = ["Decoder", "PointNotFoundError"]
