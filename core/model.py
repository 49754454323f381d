"""The DeepSeek-OCR-2 encoder/decoder pair, loaded lazily with transformers' native classes.

One `OcrModel` per (checkpoint, device, dtype) per process: ingest, search and decode share it.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from config import Settings
from core.errors import ModelLoadError, UsageError, first_line

if TYPE_CHECKING:
    import torch
    from PIL import Image

PROMPTS = {
    "ocr": "<image>\nFree OCR. ",
    "markdown": "<image>\n<|grounding|>Convert the document to markdown. ",
}


@dataclass(frozen=True)
class ModelIdentity:
    """What a collection records so that its tokens are only ever used with the checkpoint that made them."""

    model: str
    revision: str
    dim: int
    max_tokens: int = field(default=0, compare=False)  # the most tokens a page can have (sizes the storage)


def prompt_for(mode: str) -> str:
    try:
        return PROMPTS[mode]
    except KeyError:
        raise UsageError(f"unknown mode {mode!r}; choose one of: {', '.join(PROMPTS)}") from None


def resolve_dtype(name: str) -> "torch.dtype":
    import torch

    # bfloat16 is the checkpoint's own dtype; its tokens convert exactly into the store's float16 storage.
    return {"auto": torch.bfloat16, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
        name
    ]


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("TOKENDIRECT_DEVICE=cuda but no CUDA device is available")
    return name


class OcrModel:
    """Encoder and decoder of one DeepSeek-OCR-2 checkpoint. Weights load on first use."""

    def __init__(self, model: str, revision: str | None = None, device: str = "auto", dtype: str = "auto"):
        # A local checkpoint is named by its absolute path, so the collection record does not depend on the cwd.
        self.name = str(Path(model).resolve()) if Path(model).is_dir() else model
        self.requested_revision = revision
        self._device_name = device
        self._dtype_name = dtype
        self._lock = threading.Lock()
        self._model = None
        self._processor = None
        self._config = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "OcrModel":
        s = settings or Settings()
        return shared_model(s.model, s.revision, s.device, s.dtype)

    # -- loading ---------------------------------------------------------------------------------------------

    def load(self) -> "OcrModel":
        with self._lock:
            if self._model is None:
                self._load()
        return self

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText

        _ = self.config  # a wrong or missing checkpoint fails here, before any weights are read
        device = resolve_device(self._device_name)
        dtype = resolve_dtype(self._dtype_name)
        _ = self.processor
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                self.name, revision=self.requested_revision, dtype=dtype
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load model {self.name!r}: {first_line(exc)}") from exc
        self._model = model.to(device).eval()
        torch.set_grad_enabled(False)

    @property
    def model(self):
        return self.load()._model

    @property
    def processor(self):
        """The checkpoint's processor (tokenizer and image processor): no weights are read for it."""
        if self._processor is None:
            from transformers import AutoProcessor

            _ = self.config
            try:
                self._processor = AutoProcessor.from_pretrained(self.name, revision=self.requested_revision)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load model {self.name!r}: {first_line(exc)}") from exc
        return self._processor

    @property
    def max_tokens(self) -> int:
        """The most tokens a page can have: the global view, every local tile the processor may cut, and the view
        separator (1121 for the published processor: 256 + 6 x 144 + 1)."""
        p = self.processor
        ip = p.image_processor

        def view(px: int) -> int:
            return math.ceil(px / p.patch_size / p.downsample_ratio) ** 2

        tiles = ip.max_patches if ip.crop_to_patches else 0
        return view(ip.size["height"]) + tiles * view(ip.tile_size) + 1

    @property
    def device(self) -> "torch.device":
        return self.model.device

    @property
    def dtype(self) -> "torch.dtype":
        return self.model.dtype

    @property
    def config(self):
        """The checkpoint's config alone: enough to check a collection's model without loading weights."""
        if self._model is not None:
            return self._model.config
        if self._config is None:
            from transformers import AutoConfig

            if _looks_like_path(self.name) and not Path(self.name).is_dir():
                raise ModelLoadError(f"model directory {self.name} does not exist")
            try:
                self._config = AutoConfig.from_pretrained(self.name, revision=self.requested_revision)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load model {self.name!r}: {first_line(exc)}") from exc
            if self._config.model_type != "deepseek_ocr2":
                raise ModelLoadError(f"{self.name!r} is a {self._config.model_type!r} model, not DeepSeek-OCR-2")
        return self._config

    @property
    def dim(self) -> int:
        """Token dimension, read from the checkpoint (1280 for the published weights)."""
        return int(self.config.text_config.hidden_size)

    @property
    def revision(self) -> str:
        """The exact weights: the hub commit when known, else the requested revision, else a local digest."""
        commit = getattr(self.config, "_commit_hash", None)
        return commit or self.requested_revision or _local_revision(self.name)

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(model=self.name, revision=self.revision, dim=self.dim, max_tokens=self.max_tokens)

    # -- encoder ---------------------------------------------------------------------------------------------

    def encode_pages(self, images: Sequence["Image.Image"], batch_size: int = 4) -> list["torch.Tensor"]:
        """Each image's full vision token set, `[n_i, dim]`, exactly as the decoder consumes it."""
        out: list[torch.Tensor] = []
        for start in range(0, len(images), batch_size):
            batch = [im.convert("RGB") for im in images[start : start + batch_size]]
            pixels = self.processor.image_processor(images=batch, return_tensors="pt")
            with self._inference():
                feats = self.model.model.get_image_features(
                    pixel_values=pixels["pixel_values"].to(self.device, self.dtype),
                    pixel_values_local=(
                        pixels["pixel_values_local"].to(self.device, self.dtype)
                        if "pixel_values_local" in pixels
                        else None
                    ),
                    num_local_patches=pixels["num_local_patches"],
                ).pooler_output
            out.extend(f.detach().to("cpu") for f in feats)
        return out

    # -- decoder ---------------------------------------------------------------------------------------------

    def generate_from_tokens(self, tokens: "torch.Tensor", prompt: str, max_new_tokens: int = 512) -> str:
        """Regenerate text from a stored token set: the prompt's `<image>` expands to one placeholder per row."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        image_token = self.processor.image_token
        if prompt.count(image_token) != 1:
            raise UsageError(f"the prompt must hold exactly one {image_token}")
        text = prompt.replace(image_token, image_token * int(tokens.shape[0]))
        inputs = self.processor.tokenizer(text, return_tensors="pt").to(self.device)
        feats = BaseModelOutputWithPooling(pooler_output=[tokens.to(self.device, self.dtype)])
        return self._generate(inputs, max_new_tokens, mm_encoder_outputs={"image": feats})

    def generate_from_image(self, image: "Image.Image", prompt: str, max_new_tokens: int = 512) -> str:
        """The ordinary pixel path: processor + model, as DeepSeek-OCR-2 is normally run."""
        inputs = self.processor(images=image.convert("RGB"), text=prompt, return_tensors="pt").to(self.device)
        for key in ("pixel_values", "pixel_values_local"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return self._generate(inputs, max_new_tokens)

    def _generate(self, inputs, max_new_tokens: int, **extra) -> str:
        prompt_len = inputs["input_ids"].shape[1]
        with self._inference():
            ids = self.model.generate(**inputs, **extra, max_new_tokens=max_new_tokens, do_sample=False)
        return self.processor.tokenizer.decode(ids[0, prompt_len:], skip_special_tokens=True).strip()

    def _inference(self):
        import torch

        return torch.inference_mode()


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name).exists()


def _local_revision(name: str) -> str:
    """A local checkpoint has no hub commit: identify it by its config and the head of each weights file
    (safetensors headers list every tensor with its offsets), so other weights give another revision."""
    import hashlib

    path = Path(name)
    if not path.is_dir():
        return "unknown"
    digest = hashlib.sha256((path / "config.json").read_bytes() if (path / "config.json").is_file() else b"")
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            digest.update(fh.read(1 << 20))
        digest.update(str(f.stat().st_size).encode())
    return "local-" + digest.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def shared_model(model: str, revision: str | None, device: str, dtype: str) -> OcrModel:
    """One instance per configuration per process, so stages running together load weights once."""
    return OcrModel(model, revision, device, dtype)


def is_test_model(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text()).get("text_config", {}).get("hidden_size", 0) < 256
    except (OSError, ValueError):
        return False
