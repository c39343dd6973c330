"""Shared fixtures: tiny random BERT and RoBERTa encoders with tokenizers (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

WORDS = (
    "the a an what who where when how why which is are was were do does did i you he she it we "
    "they my your his her love hate like movie film book song good bad great terrible awful fine "
    "nice happy sad angry question answer city country person number name year many much long "
    "far capital river president first big small red blue team game won lost news stock market "
    "price rise fall war peace science computer phone not very really ? . , ! '"
).split()


def _build_bert(path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(special + WORDS)}
    tokenizer = BertTokenizer(vocab=vocab)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _build_roberta(path: Path) -> Path:
    import torch
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for char in bytes_to_unicode().values():
        vocab.setdefault(char, len(vocab))
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[])
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=260,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, width-32 random BERT with a word-level vocabulary, saved to a folder."""
    return _build_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    """A 2-layer, width-32 random RoBERTa with a byte-level BPE tokenizer, saved to a folder."""
    return _build_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (EFT_DATA_DIR); tests that need them skip when it is absent."""
    value = os.environ.get("EFT_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("EFT_DATA_DIR is not set to the shared data folder; real-data test skipped")
    return Path(value)
