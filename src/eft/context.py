"""Conversation context for the EFT* variant (paper 4.3).

For dialogue datasets the paper adds "128 tokens of past and future utterances" to each input
(MELD: past and future; IEMOCAP: past only). :func:`build_context_inputs` turns a
:class:`~eft.datasets.Split` with dialogue information into one input string per utterance, in
the layout of Kim and Vossen (2021, EmoBERTa), the MELD baseline of the paper::

    <past segment> SEP <target> SEP <future segment>

* every utterance reads ``"Speaker: text"`` (the target included);
* the past segment holds the preceding utterances of the same dialogue and the future segment
  the following ones, each in chronological order, joined by single spaces;
* ``SEP`` is the tokenizer's own separator, repeated as its sentence-pair template repeats it
  (``[SEP]`` for BERT, ``</s></s>`` for RoBERTa; see :func:`context_separator`). It is written
  without surrounding spaces, so the string tokenizes exactly like the pair template.

The layout is positional: the past segment is present (possibly empty) whenever
``past_tokens > 0`` and the future segment whenever ``future_tokens > 0``, so the target is
always in the same slot (e.g. the first utterance of a dialogue gives ``"SEP Speaker: text"``).
With both budgets 0 the input is just ``"Speaker: text"``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from eft.datasets import Split
from eft.errors import InputError

__all__ = ["build_context_inputs", "context_separator", "format_utterance"]


def format_utterance(text: str, speaker: str | None) -> str:
    """``"Speaker: text"`` (just ``text`` when there is no speaker name)."""
    text = text.strip()
    return f"{speaker.strip()}: {text}" if speaker and speaker.strip() else text


def _separator_count(tokenizer: Any, sep_id: int) -> int:
    """How many separator tokens the tokenizer's pair template puts between two segments."""
    try:
        first = tokenizer("a", add_special_tokens=False)["input_ids"]
        pair = tokenizer("a", "b")["input_ids"]
    except Exception:  # tokenizers without pair support
        return 1
    for start in range(len(pair) - len(first) + 1):
        if list(pair[start : start + len(first)]) == list(first):
            count, i = 0, start + len(first)
            while i < len(pair) and pair[i] == sep_id:
                count, i = count + 1, i + 1
            return max(count, 1)
    return 1


def context_separator(tokenizer: Any) -> str:
    """The string that separates segments: ``sep_token`` repeated as in the pair template.

    The count is derived by tokenizing a sentence pair and counting separator tokens between
    the two segments (1 for BERT, 2 for RoBERTa). Tokenizers without ``sep_token`` use
    ``eos_token``; with neither, :class:`InputError`.
    """
    token = getattr(tokenizer, "sep_token", None) or getattr(tokenizer, "eos_token", None)
    if not token:
        raise InputError(
            f"tokenizer {type(tokenizer).__name__} has no separator (sep_token or eos_token); "
            "use an encoder tokenizer such as BERT's or RoBERTa's for the context variant"
        )
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token * _separator_count(tokenizer, token_id)


def _count_tokens(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [len(x) for x in ids]


def _check_budget(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise InputError(f"{name} must be a non-negative integer number of tokens, got {value!r}")
    return int(value)


def build_context_inputs(
    split: Split,
    tokenizer: Any,
    past_tokens: int = 128,
    future_tokens: int = 0,
    *,
    speaker_prefix: bool = True,
) -> list[str]:
    """One EFT* input string per utterance of ``split``, aligned with ``split.texts``.

    Parameters
    ----------
    split
        A split with ``dialogue_ids`` (required). Utterances are ordered within a dialogue by
        ``utterance_ids`` (by file order when absent or tied); ``speakers`` give the
        ``"Speaker: "`` prefixes (none when absent).
    tokenizer
        A Hugging Face tokenizer; it counts tokens (without special tokens) and supplies the
        separator (:func:`context_separator`).
    past_tokens, future_tokens
        Token budgets of the past and future segments (paper: 128/128 for MELD, 128/0 for
        IEMOCAP).
    speaker_prefix
        Prefix every utterance with its speaker's name.

    Returns
    -------
    list[str]
        ``past SEP target SEP future`` as laid out in the module docstring.

    Notes
    -----
    Context utterances are chosen nearest first: the one just before (after) the target, then
    the next farther one, and so on, while the whole segment, tokenized as it will appear, fits
    its budget. The first utterance that does not fit whole is dropped and the search stops
    there, so the context stays contiguous; utterances are never cut. The target is never
    truncated or dropped, even when it alone is longer than a budget. The model's own
    ``max_length`` truncation, applied later, cuts from the end (the future segment first).
    """
    past_tokens = _check_budget("past_tokens", past_tokens)
    future_tokens = _check_budget("future_tokens", future_tokens)
    if split.dialogue_ids is None:
        raise InputError(
            "the context variant (EFT*) needs dialogue ids, but this split has none; use a "
            "dialogue dataset (meld, iemocap) or turn the context option off"
        )
    n = len(split)
    speakers = split.speakers if speaker_prefix and split.speakers is not None else [None] * n
    pieces = [format_utterance(t, s) for t, s in zip(split.texts, speakers, strict=True)]
    separator = context_separator(tokenizer) if past_tokens or future_tokens else ""
    if not separator:
        return pieces

    # Dialogues: positions of their utterances in chronological order.
    dialogues: dict[Any, list[int]] = defaultdict(list)
    for i, dialogue in enumerate(split.dialogue_ids):
        dialogues[dialogue].append(i)
    order_key = split.utterance_ids
    if order_key is not None:
        for members in dialogues.values():
            members.sort(key=lambda i: order_key[i])  # stable: ties keep file order

    # Token counts of each piece alone (segment start) and after a space (inside a segment).
    alone = _count_tokens(tokenizer, pieces)
    spaced = _count_tokens(tokenizer, [" " + p for p in pieces])

    past: list[list[int]] = [[] for _ in range(n)]
    future: list[list[int]] = [[] for _ in range(n)]
    for members in dialogues.values():
        for position, target in enumerate(members):
            if past_tokens:
                chosen: list[int] = []
                inner = 0  # tokens of the chosen pieces after the first one
                for k in reversed(members[:position]):
                    # k becomes the segment's first piece; the old first one now follows a space
                    grown = inner + (spaced[chosen[0]] if chosen else 0)
                    if alone[k] + grown > past_tokens:
                        break
                    inner = grown
                    chosen.insert(0, k)
                past[target] = chosen
            if future_tokens:
                chosen = []
                total = 0
                for k in members[position + 1 :]:
                    cost = spaced[k] if chosen else alone[k]
                    if total + cost > future_tokens:
                        break
                    total += cost
                    chosen.append(k)
                future[target] = chosen

    def segment(indices: list[int]) -> str:
        return " ".join(pieces[k] for k in indices)

    # The counts above assume token counts add up across a space; check the real segments and
    # drop the farthest utterance where a tokenizer merges across the boundary.
    for budget, chosen_lists, far_end in ((past_tokens, past, 0), (future_tokens, future, -1)):
        if not budget:
            continue
        while True:
            lengths = _count_tokens(tokenizer, [segment(c) for c in chosen_lists])
            over = [i for i, length in enumerate(lengths) if length > budget]
            if not over:
                break
            for i in over:
                chosen_lists[i].pop(far_end)

    inputs = []
    for i in range(n):
        parts = ([segment(past[i])] if past_tokens else []) + [pieces[i]]
        if future_tokens:
            parts.append(segment(future[i]))
        inputs.append(separator.join(parts))
    return inputs
