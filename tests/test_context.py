"""EFT* context inputs (paper 4.3): layout, token budgets, separators of BERT and RoBERTa."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from eft.context import build_context_inputs, context_separator, format_utterance
from eft.datasets import Split
from eft.errors import InputError

# One dialogue of 5 utterances (file order shuffled; utterance_ids give the true order) and a
# second dialogue interleaved with it. Words are in the tiny BERT vocabulary.
ROWS = [  # (dialogue, utterance, speaker, text)
    (0, 2, "Ross", "what a great movie"),
    (0, 0, "Joey", "how you doing ?"),
    (1, 0, "Monica", "the market fell"),
    (0, 1, "Rachel", "i love the film"),
    (0, 3, "Joey", "it was very very bad"),
    (1, 1, "Chandler", "not the stock market"),
    (0, 4, "Rachel", "you are not nice"),
]
ORDER0 = [1, 3, 0, 4, 6]  # file rows of dialogue 0 in chronological order


def _split(rows=ROWS) -> Split:
    return Split(
        texts=[r[3] for r in rows],
        labels=["neutral"] * len(rows),
        dialogue_ids=[r[0] for r in rows],
        utterance_ids=[r[1] for r in rows],
        speakers=[r[2] for r in rows],
    )


def _piece(row: int) -> str:
    return f"{ROWS[row][2]}: {ROWS[row][3]}"


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


@pytest.fixture(scope="module")
def roberta(tiny_roberta_dir):
    return AutoTokenizer.from_pretrained(tiny_roberta_dir)


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_separators_are_derived(bert, roberta):
    assert context_separator(bert) == "[SEP]"
    assert context_separator(roberta) == "</s></s>"

    class ThreeSeps:  # a made-up pair template "<cls> A <sep><sep><sep> B <sep>"
        sep_token = "<sep>"
        eos_token = None

        def convert_tokens_to_ids(self, token):
            return 9

        def __call__(self, text, pair=None, add_special_tokens=True):
            ids = [ord(c) for c in text]
            if pair is not None:
                ids = [1, *ids, 9, 9, 9, *[ord(c) for c in pair], 9]
            return {"input_ids": ids}

    assert context_separator(ThreeSeps()) == "<sep><sep><sep>"


def test_full_past_layout_and_order(bert):
    inputs = build_context_inputs(_split(), bert, past_tokens=1000, future_tokens=0)
    assert len(inputs) == len(ROWS)
    # 4th utterance of dialogue 0 (file row 4): the 3 earlier ones in chronological order
    expected = " ".join(_piece(r) for r in ORDER0[:3]) + "[SEP]" + _piece(4)
    assert inputs[4] == expected
    # the first utterance has an empty past segment: the target keeps its slot
    assert inputs[1] == "[SEP]Joey: how you doing ?"
    # context never crosses dialogues
    assert inputs[5] == "Monica: the market fell[SEP]Chandler: not the stock market"
    assert all("Monica" not in inputs[r] for r in ORDER0)


def test_past_and_future_layout(bert):
    inputs = build_context_inputs(_split(), bert, past_tokens=1000, future_tokens=1000)
    segments = inputs[0].split("[SEP]")  # Ross, 3rd utterance
    assert segments == [
        f"{_piece(1)} {_piece(3)}",
        _piece(0),
        f"{_piece(4)} {_piece(6)}",
    ]
    assert inputs[6].split("[SEP]")[2] == ""  # last utterance: empty future segment
    assert build_context_inputs(_split(), bert, 0, 0) == [_piece(r) for r in range(len(ROWS))]
    no_speakers = build_context_inputs(_split(), bert, 0, 5, speaker_prefix=False)
    assert no_speakers[2] == "the market fell[SEP]not the stock market"


@pytest.mark.parametrize("budget", [0, 3, 6, 9, 12, 14, 20, 40, 50])
def test_budgets_respected_nearest_first(bert, roberta, budget):
    for tokenizer in (bert, roberta):
        sep = context_separator(tokenizer)
        inputs = build_context_inputs(_split(), tokenizer, budget, budget)
        for position, row in enumerate(ORDER0):
            parts = inputs[row].split(sep)
            if budget == 0:
                assert parts == [_piece(row)]
                continue
            past, target, future = parts
            assert target == _piece(row)
            assert _n_tokens(tokenizer, past) <= budget
            assert _n_tokens(tokenizer, future) <= budget
            # the past is the m nearest utterances, and the next farther one would not fit
            before = [_piece(r) for r in ORDER0[:position]]
            m = next(
                m for m in range(len(before) + 1) if past == " ".join(before[len(before) - m :])
            )
            if m < len(before):
                assert _n_tokens(tokenizer, " ".join(before[len(before) - m - 1 :])) > budget
            after = [_piece(r) for r in ORDER0[position + 1 :]]
            m = next(m for m in range(len(after) + 1) if future == " ".join(after[:m]))
            if m < len(after):
                assert _n_tokens(tokenizer, " ".join(after[: m + 1])) > budget


def test_target_never_truncated(bert, roberta):
    rows = [
        (7, 0, "Joey", "good"),
        (7, 1, "Ross", " ".join(["very"] * 40) + " long"),
        (7, 2, "Joey", "bad"),
    ]
    split = _split(rows)
    for tokenizer in (bert, roberta):
        sep = context_separator(tokenizer)
        inputs = build_context_inputs(split, tokenizer, past_tokens=4, future_tokens=4)
        assert inputs[1].split(sep)[1] == "Ross: " + rows[1][3]
        assert _n_tokens(tokenizer, inputs[1].split(sep)[1]) > 4
        # a context utterance that does not fit whole is dropped, not cut
        assert inputs[2].split(sep)[0] == ""
        assert inputs[0].split(sep)[2] == ""


def test_roberta_string_matches_pair_template(roberta):
    inputs = build_context_inputs(_split(), roberta, past_tokens=1000)
    past, target = inputs[4].split("</s></s>")
    assert roberta(inputs[4])["input_ids"] == roberta(past, target)["input_ids"]


def test_bad_inputs(bert):
    plain = Split(texts=["a", "b"], labels=["x", "y"])
    with pytest.raises(InputError, match="needs dialogue ids"):
        build_context_inputs(plain, bert)
    with pytest.raises(InputError, match="past_tokens must be a non-negative integer"):
        build_context_inputs(_split(), bert, past_tokens=-1)
    with pytest.raises(InputError, match="future_tokens"):
        build_context_inputs(_split(), bert, future_tokens=2.5)
    assert format_utterance(" hi ", None) == "hi"
    assert format_utterance("hi", " ") == "hi"


def test_file_order_when_no_utterance_ids(bert):
    split = _split()
    split.utterance_ids = None
    inputs = build_context_inputs(split, bert, past_tokens=1000)
    assert inputs[3] == f"{_piece(0)} {_piece(1)}[SEP]{_piece(3)}"  # file order in dialogue 0


def test_meld_context(data_dir, bert):
    from eft.datasets import load_meld

    test = load_meld(data_dir)["test"]
    inputs = build_context_inputs(test, bert, past_tokens=128, future_tokens=128)
    assert len(inputs) == 2610
    for text, speaker, value in list(zip(test.texts, test.speakers, inputs, strict=True))[:300]:
        past, target, future = value.split("[SEP]")
        assert target == format_utterance(text, speaker)
        assert _n_tokens(bert, past) <= 128 and _n_tokens(bert, future) <= 128
