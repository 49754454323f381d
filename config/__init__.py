"""Settings for every stage, read from the environment (prefix TOKENDIRECT_) or a .env file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "deepseek-community/DeepSeek-OCR-2"
# A collection name is a folder name in the embedded store and a collection on a server: letters, digits, `.`, `_`
# and `-`, starting with a letter or digit (no path separators, no `..`), short enough for its lock file names.
COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def check_collection_name(name: str) -> str:
    """`name` when it can name a collection on every engine; else ValueError saying what is allowed."""
    if not COLLECTION_NAME.fullmatch(name or ""):
        raise ValueError(
            f"{name!r} cannot name a collection: use 1 to 200 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


class Settings(BaseSettings):
    """Every setting and its default: the one place defaults live (`defaults()` reads them without the
    environment)."""

    model_config = SettingsConfigDict(env_prefix="TOKENDIRECT_", env_file=".env", extra="ignore")

    model: str = Field(DEFAULT_MODEL, description="Hub id or local directory of a DeepSeek-OCR-2 checkpoint.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the model.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto = bfloat16, the dtype the checkpoint was trained in and its tokens are stored from."
    )
    data_dir: Path = Field(Path("data"), description="Embedded store and ingest state live here.")
    qdrant_url: str | None = Field(
        None, description="Unset: embedded engine under DATA_DIR; http(s)://...: a Qdrant server; :memory:: in-process."
    )
    qdrant_api_key: str | None = None
    qdrant_grpc_port: int = Field(
        6334, ge=0, le=65535, description="The server's gRPC port: page tokens travel as binary there; 0: REST only."
    )
    qdrant_timeout: int = Field(30, ge=1, description="Seconds to wait for a Qdrant server's answer.")
    qdrant_max_request_mb: float = Field(
        32.0, gt=0, description="The server's request size limit (service.max_request_size_mb): no request is larger."
    )
    # A new collection on a Qdrant server (a cluster): Qdrant's own parameters, unset = the server's default. The
    # embedded engine is one local shard and ignores them.
    shard_number: int | None = Field(
        None, ge=1, description="Shards of a new server collection; unset: one per peer of the cluster."
    )
    replication_factor: int | None = Field(
        None, ge=1, description="Copies of each shard, on different peers; unset: the server's default (1)."
    )
    write_consistency_factor: int | None = Field(
        None, ge=1, description="Replicas that must apply a write before it succeeds; unset: the server's (1)."
    )
    collection: str = "pages"
    top_k: int = Field(5, ge=1)
    batch_size: int = Field(4, ge=1, description="Pages encoded per model call.")
    max_new_tokens: int = Field(512, ge=1)
    pdf_dpi: int = Field(
        0, ge=0, description="Rasterizing resolution for PDFs; 0 sizes each page so its long side is 1024 px."
    )
    query_font_px: int = Field(0, ge=0, description="Rendered query glyph size; 0 matches body text at ingest scale.")
    # Sharing the embedded engine: a shard admits one process at a time.
    store_wait: float = Field(
        30.0, ge=0, description="Seconds a command waits for the embedded store while another process holds it."
    )
    # Ingest limits: a breach fails that file alone, with its reason.
    max_pages: int = Field(2000, ge=1, description="Most pages one document may have.")
    max_file_mb: float = Field(1024.0, gt=0, description="Largest input file, in MB.")
    max_image_pixels: int = Field(
        150_000_000, ge=1, description="Most pixels one page image may have (guards against decompression bombs)."
    )
    raster_timeout: float = Field(120.0, gt=0, description="Seconds the PDF rasterizer may take for one call.")
    trust_mtime: bool = Field(
        True, description="Skip a file without hashing it when its size and mtime match the stored record."
    )
    ocr_text: bool = Field(
        False, description="At ingest, pages without a PDF text layer get the decoder's text (one generation each)."
    )

    # The fast search path (measured defaults: README, "Search at scale"). A query runs as one Qdrant query: the
    # pages whose tokens share the most codebook centroids with the query's (an inverted index; none before the
    # codebook is learned; collections made without one scan every page's coarse pooled vectors) -> fine pooled MaxSim
    # over their survivors (binary codes in RAM) -> exact MaxSim over the full token sets of the last survivors.
    prefetch_dense: int = Field(
        350,
        ge=1,
        description="Pages the first stage hands on in a collection of PREFETCH_AT pages: the coarse pooled scan "
        "(collections made before it: HNSW over one dense vector per page).",
    )
    prefetch_at: int = Field(
        2000,
        ge=0,
        description="Collection size PREFETCH_DENSE is set for. The pages that can pass a page of the exact top 10 "
        "in the coarse scan grow with the collection, but slower than it: the first stage hands on PREFETCH_DENSE x "
        "sqrt(pages / PREFETCH_AT) pages (300 pages: 136, 1,000: 248, 10,000: 783). 0: PREFETCH_DENSE at any size.",
    )
    prefetch_share: float = Field(
        0.08,
        ge=0.0,
        le=1.0,
        description="Share of the collection's pages the first stage hands on where that is more than the depth "
        "PREFETCH_DENSE and PREFETCH_AT give (10,000 pages: 800).",
    )
    query_pool_size: float = Field(
        2.5,
        ge=1,
        description="Query tokens per query vector in the first stage (k-means, as pages are pooled; 20 tokens -> 8): "
        "its scan of every page costs in proportion to the query's rows. 1: every token.",
    )
    codebook_size: int = Field(
        2048,
        ge=0,
        description="Centroids of the codebook the fast path's first stage looks pages up by (an inverted index "
        "of the centroids nearest each page's tokens, in place of the coarse scan; 0: the coarse scan). Fixed when a "
        "collection is created; the codebook itself is learned from its first CODEBOOK_PAGES pages.",
    )
    codebook_pages: int = Field(
        1024,
        ge=1,
        description="The codebook is learned once the collection holds this many pages, from a sample of their "
        "tokens; the pages stored before then get their codebook vectors at that moment. Until then the fast path "
        "has no first stage: its fine stage scores every page.",
    )
    prefetch_codebook: int = Field(
        150,
        ge=1,
        description="Pages the codebook first stage hands on in a collection of PREFETCH_AT pages, growing as "
        "sqrt(pages / PREFETCH_AT) as the coarse scan's depth does (10,000 pages: 336).",
    )
    codebook_probes: int = Field(
        4,
        ge=1,
        description="Centroids each query token looks up in the codebook first stage, weighted by their likeness "
        "relative to the nearest one's.",
    )
    codebook_spread: int = Field(
        2,
        ge=1,
        description="Centroids each page token gives weight to in the codebook first stage, by likeness relative "
        "to its nearest one's (each centroid keeping the most any token gives it). 1: the nearest only, weight 1, "
        "as collections made before. Fixed when a collection is created.",
    )
    prefetch_pooled: int = Field(
        20, ge=1, description="Pages the stage before exact MaxSim hands to it (at least top_k)."
    )
    prefetch_dim: int = Field(
        1280,
        ge=0,
        description="Token dimension the prefetch depths are set for. A collection of narrower tokens has binary "
        "codes of fewer bits, which order pages less precisely (their error grows as 1 / sqrt(bits)): its "
        "stages look sqrt(PREFETCH_DIM / dim) times deeper (384 dimensions: 1.8 times). 0: the depths as set.",
    )
    pooling: Literal["cluster", "window"] = Field(
        "cluster", description="How the pooled multivector is made: k-means over the tokens, or windows along them."
    )
    pool_size: int = Field(
        8, ge=1, description="Tokens per coarse pooled vector, on average (257 tokens -> 33 vectors, 1121 -> 141)."
    )
    fine_pool_size: float = Field(
        1.6, ge=1, description="Tokens per fine pooled vector, on average (257 tokens -> 161 vectors, 689 -> 431)."
    )
    fine_max: int = Field(
        448,
        ge=0,
        description="At most this many fine pooled vectors a page (a 1121-token page: 448 rather than 701); 0: no "
        "cap. Fixed when a collection is created.",
    )
    fine_likeness: float = Field(
        0.75,
        gt=0.0,
        le=1.0,
        description="A page gets fewer fine pooled vectors than FINE_POOL_SIZE gives where fewer leave every token at "
        "least this alike (cosine, on the tokens' sketches) to one: copies of a few directions (a repeated word, blank "
        "canvas, rules) pool into one vector each, and the fine stage costs in proportion to the vectors. 1: "
        "FINE_POOL_SIZE alone. Fixed when a collection is created.",
    )
    pooled_quantization: bool = Field(
        True,
        description="Keep the pooled vectors in RAM quantized (binary; int8 in collections with a dense first "
        "stage), their originals on disk.",
    )
    sign_codes: bool = Field(
        True,
        description="Store binary-quantized pooled vectors as their uint8 sign codes, half the bytes of float16: "
        "only their binary copies are ever scored, and those are the same either way. Fixed when a collection is "
        "created.",
    )
    hnsw_m: int = Field(16, ge=4, description="HNSW graph degree of a dense first stage's index.")
    first_stage: Literal["pooled", "mean", "muvera"] = Field(
        "pooled",
        description="The fast path's first stage: a scan of every page's coarse pooled vectors, or (as in older "
        "collections) HNSW over one vector per page, the mean of its unit tokens or a MUVERA encoding.",
    )
    first_stage_probes: int = Field(
        3,
        ge=1,
        description="A dense first stage's query vectors, each an HNSW search of PREFETCH_DENSE pages: the query's "
        "mean, then the means of its token groups (1: the mean alone).",
    )
    exact_below: int = Field(
        256,
        ge=0,
        description="Collections of at most this many pages are searched by exact MaxSim over every page: there it "
        "costs about what the fast path's last stage does, and it is exact.",
    )
    blank_similarity: float = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="Query tokens at least this alike (cosine) to a blank canvas's tokens are dropped; 1 keeps all.",
    )

    # Hybrid search: weighted reciprocal rank fusion of the visual and the text ranking, scored by Qdrant as
    # 1 / ((position + 1) / weight + k - 1) per ranking (search/fusion.py; measured defaults: README, "Fusing the
    # signals"). Setting any of the three overrides the weights calibrated for a collection (`eval --save-weights`).
    hybrid_rrf_k: int = Field(2, ge=1, description="k of hybrid search's reciprocal rank fusion.")
    hybrid_visual_weight: float = Field(
        0.3, gt=0, description="Weight of the visual ranking in hybrid search (positions are divided by it)."
    )
    hybrid_text_weight: float = Field(
        1.0, gt=0, description="Weight of the text (BM25) ranking in hybrid search (positions are divided by it)."
    )

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, name: str) -> str:
        return check_collection_name(name)

    def shard_path(self) -> Path:
        """The embedded store's folder for the configured collection (the name is checked again here: settings
        copied with another collection skip validation)."""
        return Path(self.data_dir) / "qdrant" / check_collection_name(self.collection)


def defaults() -> Settings:
    """The settings' defaults alone, without reading the environment or a .env file."""
    return Settings.model_construct()
