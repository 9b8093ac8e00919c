"""Build tiny random-weight ColPali-family models offline and deterministically.

    python -m models.tiny models/tiny-colqwen2            # default family
    python -m models.tiny models/tiny-colpali --family colpali

They are real model directories (config, safetensors, tokenizer, processor) loaded through the same
code as real checkpoints, so tests exercise the production loading path without downloading weights.
Their embeddings are meaningless; their shapes, dtypes and code paths are not.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
CORPUS = [
    "Describe the image.", "shipping manifest consignee shipper carrier container line items quantity weight value",
    "invoice total due payment terms net amount tax currency date number vendor customer address",
    "What is the total weight of the containers?", "Which port does the vessel depart from?",
    "the quick brown fox jumps over the lazy dog 0123456789 .,;:!?()[]{}-+/%$€",
]  # fmt: skip
MAX_VISUAL_TOKENS = 64  # tiny: 28*28*64 pixels → at most 64 visual tokens per page


def _train_bpe(specials: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tok


def build_colqwen2(out: Path, *, seed: int = 0) -> Path:
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from transformers import Qwen2TokenizerFast, Qwen2VLConfig
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    torch.manual_seed(seed)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=_train_bpe(QWEN_SPECIALS),
        unk_token=None, bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}, "rope_theta": 10000.0,
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    model = ColQwen2(config).eval()
    processor = ColQwen2Processor(
        image_processor=Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=MAX_VISUAL_TOKENS * 28 * 28),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_note(out, "colqwen2")
    return out


def build_colpali(out: Path, *, seed: int = 0) -> Path:
    """Tiny ColPali (PaliGemma: SigLIP vision tower + Gemma decoder)."""
    from colpali_engine.models import ColPali, ColPaliProcessor
    from transformers import GemmaTokenizerFast, PaliGemmaConfig, SiglipImageProcessor

    torch.manual_seed(seed)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"]
    tokenizer = GemmaTokenizerFast(
        tokenizer_object=_train_bpe(specials), bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
    )  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_size, patch = 56, 14
    n_patches = (image_size // patch) ** 2
    config = PaliGemmaConfig(
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": image_size, "patch_size": patch, "projection_dim": 64, "model_type": "siglip_vision_model",
        },
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16, "model_type": "gemma",
            "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        },
        projection_dim=64, hidden_size=64, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    config.text_config.num_image_tokens = n_patches
    config.vision_config.num_image_tokens = n_patches
    model = ColPali(config).eval()
    image_processor = SiglipImageProcessor(
        size={"height": image_size, "width": image_size}, image_seq_length=n_patches
    )
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.image_seq_length = n_patches
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    _write_note(out, "colpali")
    return out


def _write_note(out: Path, family: str) -> None:
    (out / "TINY_MODEL.json").write_text(
        json.dumps(
            {"family": family, "note": "random weights built by models/tiny.py; embeddings are meaningless"},
            indent=2,
        )
    )


IDEFICS3_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>", "<end_of_utterance>",
    "<global-img>", *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
]  # fmt: skip


def _colidefics3(
    out: Path, text: dict, vision: dict, scale: int, processor: dict, *, seed: int, dtype: torch.dtype
) -> Path:
    """ColIdefics3 (ColSmol): an Idefics3 model (SigLIP tower, pixel shuffle, Llama decoder) + 128-d projection.

    The tokenizer is the tiny BPE with Idefics3's special tokens (image, tile-position and global-image tags)
    as single tokens, as in the real tokenizer; token ids differ from the real model's, compute does not.
    """
    from transformers import GPT2TokenizerFast, Idefics3Config
    from transformers.models.idefics3 import Idefics3ImageProcessor

    from engine.embedding.families import FAMILIES

    model_cls, processor_cls = FAMILIES["colidefics3"].classes()
    torch.manual_seed(seed)
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=_train_bpe(IDEFICS3_SPECIALS), bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|im_end|>", unk_token="<|endoftext|>",
    )  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<|im_start|>", "<|im_end|>")}
    config = Idefics3Config(
        text_config={
            **text, "vocab_size": max(text.get("vocab_size", 0), len(tokenizer)), "pad_token_id": ids["<|im_end|>"],
            "bos_token_id": ids["<|im_start|>"], "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config=vision, scale_factor=scale, image_token_id=ids["<image>"], pad_token_id=ids["<|im_end|>"],
    )  # fmt: skip
    model = model_cls(config).eval().to(dtype)
    image_processor = Idefics3ImageProcessor(
        size=processor["size"], max_image_size=processor["max_image_size"], do_image_splitting=True
    )
    proc = processor_cls(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=processor["image_seq_len"]
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def build_colidefics3(out: Path, *, seed: int = 0) -> Path:
    """Tiny ColSmol: 64-px tiles of 8-px patches, pixel shuffle 2 → 16 tokens a tile; a letter page (longest
    edge 128) → 2×2 tiles + the global view = 80 image tokens."""
    text = {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 2048,
        "rope_theta": 100000.0,
    }  # fmt: skip
    vision = {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 64, "patch_size": 8,
    }  # fmt: skip
    processor = {"size": {"longest_edge": 128}, "max_image_size": {"longest_edge": 64}, "image_seq_len": 16}
    _colidefics3(out, text, vision, 2, processor, seed=seed, dtype=torch.float32)
    _write_note(out, "colidefics3")
    return out


def build_colmodernvbert(out: Path, *, seed: int = 0) -> Path:
    """Tiny ColModernVBert: the same tiling as tiny ColSmol (64-px tiles, 16 tokens each), a 2-layer
    SigLIP tower and a 2-layer bidirectional ModernBERT encoder."""
    from transformers import ModernVBertConfig, PreTrainedTokenizerFast
    from transformers.models.idefics3 import Idefics3ImageProcessor

    from engine.embedding.families import FAMILIES

    model_cls, processor_cls = FAMILIES["colmodernvbert"].classes()
    torch.manual_seed(seed)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "[PAD]", "[UNK]", *IDEFICS3_SPECIALS[3:]]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(specials), bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
        pad_token="[PAD]", unk_token="[UNK]",
    )  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials[:3]}
    config = ModernVBertConfig(
        text_config={
            "model_type": "modernbert", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 2048,
            "global_attn_every_n_layers": 1, "local_attention": 64, "pad_token_id": ids["[PAD]"],
            "bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": ids["<|end_of_text|>"],
            "cls_token_id": ids["<|begin_of_text|>"], "sep_token_id": ids["<|end_of_text|>"],
        },
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "image_size": 64, "patch_size": 8,
        },
        pixel_shuffle_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    model = model_cls(config).eval()
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": 128}, max_image_size={"longest_edge": 64}, do_image_splitting=True
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor_cls(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=16).save_pretrained(out)
    _write_note(out, "colmodernvbert")
    return out


def _qwen3_family(
    out: Path,
    family: str,
    text: dict,
    vision: dict,
    processor: dict,
    *,
    dim: int,
    seed: int,
    dtype: torch.dtype,
) -> Path:
    """ColQwen3 (Qwen3-VL) or ColQwen3.5 (Qwen3.5: Gated DeltaNet + attention) with a `dim`-d head.

    Both use Qwen3-VL's vision pipeline: 16-px patches merged 2×2 (32 px a visual token) and the
    tiny BPE with Qwen's special tokens. ColQwen3's head is 320-d in colpali-engine's class whatever
    `dim` says; ColQwen3.5 reads `config.dim`.
    """
    from transformers import Qwen2TokenizerFast
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl import Qwen3VLVideoProcessor

    from engine.embedding.families import FAMILIES

    model_cls, processor_cls = FAMILIES[family].classes()
    torch.manual_seed(seed)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=_train_bpe(QWEN_SPECIALS),
        unk_token=None, bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    eos = ids["<|endoftext|>"]
    text = {**text, "vocab_size": max(text.get("vocab_size", 0), len(tokenizer)),
            "bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}  # fmt: skip
    special = {
        "image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
    }  # fmt: skip
    if family == "colqwen3":
        from transformers import Qwen3VLConfig

        config: Any = Qwen3VLConfig(text_config=text, vision_config=vision, **special)
    else:
        from transformers import Qwen3_5Config

        config = Qwen3_5Config(text_config=text, vision_config=vision, **special)
        config.dim = dim
    model = model_cls(config).eval().to(dtype)
    image_processor = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        min_pixels=processor["min_pixels"], max_pixels=processor["max_pixels"],
    )  # fmt: skip
    proc = processor_cls(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen3VLVideoProcessor()
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


TINY_QWEN3_TEXT = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 4096,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                        "mrope_interleaved": True},
}  # fmt: skip
TINY_QWEN3_VISION = {
    "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 16,
    "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3, "out_hidden_size": 64,
    "num_position_embeddings": 256,
}  # fmt: skip
TINY_QWEN3_PROCESSOR = {"min_pixels": 4 * 32 * 32, "max_pixels": MAX_VISUAL_TOKENS * 32 * 32}


def build_colqwen3(out: Path, *, seed: int = 0) -> Path:
    """Tiny ColQwen3: 2-layer Qwen3-VL text model, 2-block vision tower with one deepstack layer, 320-d head."""
    vision = {**TINY_QWEN3_VISION, "deepstack_visual_indexes": [0]}
    _qwen3_family(out, "colqwen3", TINY_QWEN3_TEXT, vision, TINY_QWEN3_PROCESSOR, dim=320, seed=seed,
                  dtype=torch.float32)  # fmt: skip
    _write_note(out, "colqwen3")
    return out


def build_colqwen3_5(out: Path, *, seed: int = 0, dim: int = 320) -> Path:
    """Tiny ColQwen3.5: 4 text layers (3 Gated DeltaNet + 1 attention, Qwen3.5's 3:1 pattern), `dim`-d head."""
    text = {
        **TINY_QWEN3_TEXT, "num_hidden_layers": 4, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 16,
        "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
    }  # fmt: skip
    _qwen3_family(out, "colqwen3.5", text, TINY_QWEN3_VISION, TINY_QWEN3_PROCESSOR, dim=dim, seed=seed,
                  dtype=torch.float32)  # fmt: skip
    _write_note(out, "colqwen3.5")
    return out


def build_qwen3_fullsize_random(family: str, config_json: Path, out: Path, *, seed: int = 0) -> Path:
    """Full-size ColQwen3 / ColQwen3.5 architecture (models/configs/*.json) with random weights, bf16, for
    speed benchmarks only; the tokenizer is the tiny BPE (token ids differ from the real model's, compute
    does not)."""
    spec = json.loads(config_json.read_text())
    return _qwen3_family(
        out, family, spec["text_config"], spec["vision_config"], spec["processor"], dim=spec.get("dim", 320),
        seed=seed, dtype=torch.bfloat16,
    )  # fmt: skip


BUILDERS = {
    "colqwen2": build_colqwen2, "colpali": build_colpali, "colidefics3": build_colidefics3,
    "colmodernvbert": build_colmodernvbert, "colqwen3": build_colqwen3, "colqwen3.5": build_colqwen3_5,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--family", choices=sorted(BUILDERS), default="colqwen2")
    args = parser.parse_args()
    # Build into a temp dir and rename, so a half-written model directory never exists.
    with tempfile.TemporaryDirectory(dir=args.out.parent if args.out.parent.exists() else None) as tmp:
        built = BUILDERS[args.family](Path(tmp) / "model")
        if args.out.exists():
            import shutil

            shutil.rmtree(args.out)
        built.rename(args.out)
    print(args.out)


def build_fullsize_random(
    out: Path, config_json: Path = Path(__file__).parent / "configs" / "colqwen2-2b.json", *, seed: int = 0
) -> Path:
    """Full-size ColQwen2 architecture (Qwen2-VL-2B) with random weights, for speed benchmarks only.

    Saved in bf16 (4.4 GB). The tokenizer is the tiny BPE one: token ids differ from the real model's,
    compute does not.
    """
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from transformers import Qwen2TokenizerFast, Qwen2VLConfig
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    torch.manual_seed(seed)
    spec = json.loads(config_json.read_text())
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=_train_bpe(QWEN_SPECIALS),
        unk_token=None, bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )  # fmt: skip
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    text = {
        **spec["text_config"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    config = Qwen2VLConfig(
        text_config=text, vision_config=spec["vision_config"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    model = ColQwen2(config).eval().to(torch.bfloat16)
    processor = ColQwen2Processor(
        image_processor=Qwen2VLImageProcessor(**spec["processor"]),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_colsmol_fullsize_random(
    out: Path, config_json: Path = Path(__file__).parent / "configs" / "colsmol-256m.json", *, seed: int = 0
) -> Path:
    """Full-size ColSmol-256M architecture (models/configs/colsmol-256m.json) with random weights, for speed
    benchmarks only (bf16, ~0.5 GB)."""
    spec = json.loads(config_json.read_text())
    return _colidefics3(
        out, spec["text_config"], spec["vision_config"], spec["scale_factor"], spec["processor"],
        seed=seed, dtype=torch.bfloat16,
    )  # fmt: skip


BUILDERS["colqwen2-fullsize-random"] = build_fullsize_random
BUILDERS["colsmol-fullsize-random"] = build_colsmol_fullsize_random
CONFIGS = Path(__file__).parent / "configs"
BUILDERS["colqwen3-4b-fullsize-random"] = lambda out, seed=0: build_qwen3_fullsize_random(
    "colqwen3", CONFIGS / "colqwen3-4b.json", out, seed=seed
)
BUILDERS["colqwen3.5-0.8b-fullsize-random"] = lambda out, seed=0: build_qwen3_fullsize_random(
    "colqwen3.5", CONFIGS / "colqwen3.5-0.8b.json", out, seed=seed
)

if __name__ == "__main__":
    main()
