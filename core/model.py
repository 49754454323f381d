"""The DeepSeek-OCR-2 encoder/decoder pair, loaded lazily with transformers' native classes.

One `OcrModel` per (checkpoint, device, dtype) per process: ingest, search and decode share it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from config import Settings
from core.errors import ModelLoadError, UsageError, first_line

if TYPE_CHECKING:
    import torch
    from PIL import Image

LOCAL_DIGEST = "local-"  # a local checkpoint's revision: its digest (_local_revision)
HUB_PROBE_S = 3.0  # seconds to wait for the Hugging Face Hub before treating the machine as offline

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

    def same_weights(self, other: "ModelIdentity") -> bool:
        """Whether both name the same weights: the same dimension and revision digest (a hub commit, or a local
        checkpoint's digest), wherever the checkpoint sits. A revision that is no digest (a branch or tag name) only
        identifies weights together with the model it names."""
        if self.dim != other.dim or self.revision != other.revision:
            return False
        return is_digest(self.revision) or self.model == other.model


def is_digest(revision: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}", revision or "")) or (revision or "").startswith(LOCAL_DIGEST)


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
        self._local_only = False  # the hub cannot be reached: load from the local cache only

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
        quiet_transformers()
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                self.name, revision=self.requested_revision, dtype=dtype, local_files_only=self._local_only
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
                self._processor = AutoProcessor.from_pretrained(
                    self.name, revision=self.requested_revision, local_files_only=self._local_only
                )
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
                raise ModelLoadError(f"model directory {self.name} does not exist; {WAY_OUT}")
            self._local_only = not _looks_like_path(self.name) and self._offline()
            quiet_transformers()
            try:
                self._config = AutoConfig.from_pretrained(
                    self.name, revision=self.requested_revision, local_files_only=self._local_only
                )
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load model {self.name!r}: {first_line(exc)}; {WAY_OUT}") from exc
            if self._config.model_type != "deepseek_ocr2":
                raise ModelLoadError(f"{self.name!r} is a {self._config.model_type!r} model, not DeepSeek-OCR-2")
        return self._config

    def _offline(self) -> bool:
        """Whether the hub cannot be used (HF_HUB_OFFLINE, or no answer within HUB_PROBE_S): then the checkpoint
        must be in the local cache, and a missing one fails at once instead of after the hub client's retries."""
        if not hub_offline() and hub_reachable():
            return False
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(self.name, "config.json", revision=self.requested_revision), str):
            why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached"
            raise ModelLoadError(f"model {self.name!r} is not in the local Hugging Face cache and {why}; {WAY_OUT}")
        return True

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
        return self.text_of(self.generate_ids_from_tokens(tokens, prompt, max_new_tokens))

    def generate_from_image(self, image: "Image.Image", prompt: str, max_new_tokens: int = 512) -> str:
        """The ordinary pixel path: processor + model, as DeepSeek-OCR-2 is normally run."""
        return self.text_of(self.generate_ids_from_image(image, prompt, max_new_tokens))

    def generate_ids_from_tokens(self, tokens: "torch.Tensor", prompt: str, max_new_tokens: int = 512) -> list[int]:
        """The token ids `generate_from_tokens` decodes into its text (the new ones, special tokens included)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        image_token = self.processor.image_token
        if prompt.count(image_token) != 1:
            raise UsageError(f"the prompt must hold exactly one {image_token}")
        text = prompt.replace(image_token, image_token * int(tokens.shape[0]))
        inputs = self.processor.tokenizer(text, return_tensors="pt").to(self.device)
        feats = BaseModelOutputWithPooling(pooler_output=[tokens.to(self.device, self.dtype)])
        return self._generate(inputs, max_new_tokens, mm_encoder_outputs={"image": feats})

    def generate_ids_from_image(self, image: "Image.Image", prompt: str, max_new_tokens: int = 512) -> list[int]:
        """The token ids `generate_from_image` decodes into its text."""
        inputs = self.processor(images=image.convert("RGB"), text=prompt, return_tensors="pt").to(self.device)
        for key in ("pixel_values", "pixel_values_local"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return self._generate(inputs, max_new_tokens)

    def text_of(self, ids: list[int]) -> str:
        """The text of generated token ids."""
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _generate(self, inputs, max_new_tokens: int, **extra) -> list[int]:
        prompt_len = inputs["input_ids"].shape[1]
        with self._inference():
            ids = self.model.generate(**inputs, **extra, max_new_tokens=max_new_tokens, do_sample=False)
        return ids[0, prompt_len:].tolist()

    def _inference(self):
        import torch

        return torch.inference_mode()


WAY_OUT = (
    "point TOKENDIRECT_MODEL at a local copy of the checkpoint, or try the pipeline with a tiny random-weight model "
    "(meaningless output): tokendirect make-test-model DIR, then TOKENDIRECT_MODEL=DIR"
)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = HUB_PROBE_S) -> bool:
    """Whether the Hugging Face Hub answers a connection within `timeout` (through a proxy: assumed so)."""
    if hub_offline():
        return False
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a direct probe says nothing about a proxied connection
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def quiet_transformers() -> None:
    """transformers' own progress bars (loading and saving weights) and warnings (the image processor's channel
    guesses) stay off the terminal: the command line reports what matters itself."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


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
    return LOCAL_DIGEST + digest.hexdigest()[:16]


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
