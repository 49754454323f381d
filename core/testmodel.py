"""A tiny random-weight DeepSeek-OCR-2 checkpoint, written with the same transformers classes as the real one.

Its output text is meaningless; it exists so the whole pipeline (processor framing, encoder, stored tokens,
decoder) runs offline on a CPU in seconds, through the very same `from_pretrained` path as the real weights.
"""

from __future__ import annotations

import string
from pathlib import Path

# Text the tokenizer is trained on: enough to give it a byte-level vocabulary and common merges.
_CORPUS = [
    "Free OCR.",
    "Convert the document to markdown.",
    string.ascii_letters + string.digits + string.punctuation,
    "the quick brown fox jumps over the lazy dog",
    "Invoice total amount due page report table figure section chapter",
] * 4

SPECIAL_TOKENS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<image>", "<|grounding|>"]


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # it would print to stdout, which belongs to --json output
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    bos, eos, pad, image, grounding = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        additional_special_tokens=[image, grounding],
        model_max_length=8192,
    )


TEST_HIDDEN_SIZE = 64  # the token dimension of the default test model: small, for a fast suite


def make_test_model(directory: str | Path, seed: int = 0, hidden_size: int = TEST_HIDDEN_SIZE) -> Path:
    """Write a tiny random-weight checkpoint (model, processor, tokenizer) to `directory` and return it. Its
    processor is the published one, so pages have the published token counts (257, 1121 for six tiles);
    `hidden_size` is the token dimension (the published model's is 1280)."""
    import torch
    from transformers import (
        DeepseekOcr2Config,
        DeepseekOcr2ForConditionalGeneration,
        DeepseekOcr2ImageProcessorPil,
        DeepseekOcr2Processor,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    processor = DeepseekOcr2Processor(image_processor=DeepseekOcr2ImageProcessorPil(), tokenizer=tokenizer)

    encoder_width = 32  # the SAM projection's output feeds the Qwen2-style encoder, so the two must agree
    config = DeepseekOcr2Config(
        vision_config={
            "sam_config": {
                "hidden_size": 16,
                "output_channels": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "global_attn_indexes": [1],
                "mlp_dim": 32,
                "downsample_channels": [16, encoder_width],
                "initializer_range": 0.02,  # the default (1e-10) leaves a random SAM blind to the image
            },
            "encoder_config": {
                "hidden_size": encoder_width,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "vocab_size": 16,
            },
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 128,
            "moe_intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "n_routed_experts": 4,
            "n_shared_experts": 1,
            "num_experts_per_tok": 2,
            "mlp_layer_types": ["dense", "sparse"],
            "max_position_embeddings": 4096,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(seed)
    model = DeepseekOcr2ForConditionalGeneration(config).eval()
    _make_tokens_follow_the_image(model)
    model = model.to(torch.bfloat16)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _make_tokens_follow_the_image(model) -> None:
    """Random attention is nearly uniform, so every learned query averages all patches and every page gets
    almost the same tokens (cosine 0.9999 between pages). Sharper attention and smaller query embeddings make
    each token depend on particular patches, as a trained encoder's do, so retrieval tests have a signal."""
    import torch

    vision = model.model.vision_tower
    with torch.no_grad():
        vision.query_1024_resolution.weight.mul_(0.1)
        vision.query_768_resolution.weight.mul_(0.1)
        for layer in vision.vision_encoder.layers:
            layer.self_attn.q_proj.weight.mul_(30.0)
            layer.self_attn.k_proj.weight.mul_(30.0)
