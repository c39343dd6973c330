"""Dataset readers: real published files (EFT_DATA_DIR) and small fixtures in each layout."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import pytest

from eft import datasets
from eft.datasets import (
    DATASETS,
    Dataset,
    Split,
    load,
    load_ag_news,
    load_iemocap,
    load_imdb,
    load_meld,
    load_sst2,
    load_trec,
    read_labeled_file,
    read_text_file,
    resolve_data_dir,
    subsample,
)
from eft.errors import InputError

# ------------------------------------------------------------------------------------------
# Real data (skipped without EFT_DATA_DIR)
# ------------------------------------------------------------------------------------------

MELD_COUNTS = {
    "train": (9989, [4710, 1743, 1205, 1109, 683, 271, 268]),
    "validation": (1109, [470, 163, 150, 153, 111, 22, 40]),
    "test": (2610, [1256, 402, 281, 345, 208, 68, 50]),
}


def test_meld_real(data_dir):
    ds = load_meld(data_dir)
    assert ds.label_names == ["neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"]
    summary = ds.summary()
    for split, (size, counts) in MELD_COUNTS.items():
        assert summary[split]["size"] == size
        assert list(summary[split]["labels"].values()) == counts
    train = ds["train"]
    assert len(set(train.dialogue_ids)) == 1038
    assert len(set(ds["test"].dialogue_ids)) == 280
    assert train.speakers[:2] == ["Chandler", "The Interviewer"]
    assert train.utterance_ids[:3] == [0, 1, 2]
    assert "company’s" in train.texts[0]  # UTF-8 kept verbatim


def test_imdb_real(data_dir):
    ds = load_imdb(data_dir)
    sizes = {name: len(split) for name, split in ds.splits.items()}
    assert sizes == {"train": 22500, "validation": 2500, "test": 25000}
    assert ds.label_names == ["negative", "positive"]
    val = ds["validation"]
    assert 1100 < val.labels.count("positive") < 1400
    assert ds.summary()["test"]["labels"] == {"negative": 12500, "positive": 12500}
    again = load_imdb(data_dir)
    assert again["validation"].texts == val.texts
    assert again["train"].labels == ds["train"].labels
    # train + validation is a partition of the official 25,000 training reviews
    full = load_imdb(data_dir, validation_fraction=0.0)
    assert set(full.splits) == {"train", "test"}
    assert sorted(ds["train"].texts + val.texts) == sorted(full["train"].texts)


def test_ag_news_real_test_only(data_dir):
    with pytest.warns(UserWarning, match="train split not found"):
        ds = load("ag_news", data_dir)
    assert "train" not in ds and "validation" not in ds
    assert ds.summary()["test"] == {
        "size": 7600,
        "labels": {"World": 1900, "Sports": 1900, "Business": 1900, "Sci/Tech": 1900},
    }
    assert ds["test"].texts[0].startswith("Fears for T N pension after talks Unions representing")
    assert not any("\\" in text for text in ds["test"].texts)


def test_trec_real(data_dir):
    ds = load_trec(data_dir)
    summary = ds.summary()
    assert summary["train"] == {
        "size": 5452,
        "labels": {"ABBR": 86, "DESC": 1162, "ENTY": 1250, "HUM": 1223, "LOC": 835, "NUM": 896},
    }
    assert summary["test"] == {
        "size": 500,
        "labels": {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65, "LOC": 81, "NUM": 113},
    }
    assert ds["train"].texts[0] == "How did serfdom develop in and then leave Russia ?"
    assert any("sister\u00f0city" in t for t in ds["train"].texts)  # Latin-1 byte 0xF0
    fine = load_trec(data_dir, fine=True)
    assert fine["train"].labels[0] == "DESC:manner"
    assert len(set(fine["train"].labels)) == 50


def test_sst2_real(data_dir):
    ds = load_sst2(data_dir)
    summary = ds.summary()
    assert summary["train"] == {"size": 6920, "labels": {"negative": 3310, "positive": 3610}}
    assert summary["validation"] == {"size": 872, "labels": {"negative": 428, "positive": 444}}
    assert summary["test"] == {"size": 1821, "labels": {"negative": 912, "positive": 909}}
    glue = load("sst2", data_dir, variant="glue")
    assert "test" not in glue
    summary = glue.summary()
    assert summary["train"] == {"size": 67349, "labels": {"negative": 29780, "positive": 37569}}
    assert summary["validation"]["size"] == 872
    assert glue["validation"].texts[0] == "it 's a charming and often affecting journey ."


def test_data_dir_from_env(data_dir, monkeypatch):
    monkeypatch.setenv("EFT_DATA_DIR", str(data_dir))
    assert resolve_data_dir() == data_dir
    assert len(load("trec")["test"]) == 500


# ------------------------------------------------------------------------------------------
# Fixtures in the published layouts
# ------------------------------------------------------------------------------------------

IEMOCAP_DIALOGUES = [
    [("Ses01F", "Hello there.", "neutral"), ("Ses01M", "I am so angry!", "angry")],
    [
        ("Ses02F", "What a day.", "frustrated"),
        ("Ses02M", "We won!", "excited"),
        ("Ses02F", "So happy.", "happy"),
    ],
    [("Ses03F", "I miss her.", "sad")],
]


def _write_iemocap_txt(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    blocks = ["\n".join("\t".join(u) for u in d) for d in IEMOCAP_DIALOGUES]
    for stem in ("train", "dev", "test"):
        (folder / f"iemocap_{stem}.txt").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def test_iemocap_txt_layout(tmp_path):
    _write_iemocap_txt(tmp_path / "iemocap")
    ds = load_iemocap(tmp_path)
    assert ds.label_names == ["happy", "sad", "neutral", "angry", "excited", "frustrated"]
    train = ds["train"]
    assert len(train) == 6 and set(ds.splits) == {"train", "validation", "test"}
    assert train.dialogue_ids == [0, 0, 1, 1, 1, 2]
    assert train.utterance_ids == [0, 1, 0, 1, 2, 0]
    assert train.speakers[2] == "Ses02F"
    assert train.texts[1] == "I am so angry!"
    assert train.labels == ["neutral", "angry", "frustrated", "excited", "happy", "sad"]


def test_iemocap_csv_layout(tmp_path):
    folder = tmp_path / "iemocap"
    folder.mkdir()
    for stem in ("train", "dev", "test"):
        with open(folder / f"iemocap_{stem}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["dialogue_id", "utterance_id", "speaker", "text", "label"])
            for d, dialogue in enumerate(IEMOCAP_DIALOGUES):
                for u, (speaker, text, label) in enumerate(dialogue):
                    writer.writerow([f"Ses0{d}", u, speaker, text, label[:3]])
    ds = load("iemocap", tmp_path)
    test = ds["test"]
    assert test.dialogue_ids[:3] == ["Ses00", "Ses00", "Ses01"]
    assert test.utterance_ids == [0, 1, 0, 1, 2, 0]
    assert test.labels == ["neutral", "angry", "frustrated", "excited", "happy", "sad"]


def test_iemocap_bad_line_and_missing(tmp_path):
    with pytest.raises(InputError, match=r"iemocap_train\.txt.*--data-dir"):
        load_iemocap(tmp_path)
    folder = tmp_path / "iemocap"
    _write_iemocap_txt(folder)
    (folder / "iemocap_test.txt").write_text("A\tHello\tneutral\nB only two\tsad\n")
    with pytest.raises(InputError, match="line 2 must be 'speaker<TAB>utterance<TAB>label'"):
        load_iemocap(tmp_path)
    (folder / "iemocap_test.txt").write_text("A\tHello\tbored\n")
    with pytest.raises(InputError, match="unknown IEMOCAP label 'bored'"):
        load_iemocap(tmp_path)


def _write_ag_news(folder: Path, n_per_class: int = 10) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.csv", n_per_class), ("test.csv", 2)):
        with open(folder / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            for klass in (1, 2, 3, 4):
                for i in range(n):
                    writer.writerow([klass, f"Title {klass}-{i}", f'Line one\\new "quoted" {i}'])


def test_ag_news_train_and_test(tmp_path):
    _write_ag_news(tmp_path / "ag_news", n_per_class=25)
    ds = load_ag_news(tmp_path)
    assert ds.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 90, "validation": 10, "test": 8}
    assert ds["test"].texts[0] == 'Title 1-0 Line one new "quoted" 0'
    assert ds["test"].labels == ["World"] * 2 + ["Sports"] * 2 + ["Business"] * 2 + ["Sci/Tech"] * 2
    all_texts = ds["train"].texts + ds["validation"].texts
    assert len(set(all_texts)) == 100
    again = load_ag_news(tmp_path)
    assert again["validation"].texts == ds["validation"].texts
    other = load_ag_news(tmp_path, seed=7)
    assert other["validation"].texts != ds["validation"].texts


def test_ag_news_test_fraction_divides_the_test_split(tmp_path):
    _write_ag_news(tmp_path / "ag_news", n_per_class=25)
    (tmp_path / "ag_news" / "train.csv").unlink()
    with open(tmp_path / "ag_news" / "test.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for klass in (1, 2, 3, 4):
            for i in range(25):
                writer.writerow([klass, f"T{klass}-{i}", "d"])
    ds = load_ag_news(tmp_path, test_fraction=0.2)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 72, "validation": 8, "test": 20}
    parts = ds["train"].texts + ds["validation"].texts + ds["test"].texts
    assert sorted(parts) == sorted(f"T{k}-{i} d" for k in (1, 2, 3, 4) for i in range(25))
    assert load_ag_news(tmp_path, test_fraction=0.2)["test"].texts == ds["test"].texts
    assert load("ag_news", tmp_path, test_fraction=0.2)["train"].texts == ds["train"].texts
    with pytest.raises(InputError, match="test_fraction must be in"):
        load_ag_news(tmp_path, test_fraction=1.5)
    _write_ag_news(tmp_path / "ag_news")
    with pytest.raises(InputError, match="train.csv exists"):
        load_ag_news(tmp_path, test_fraction=0.2)


@pytest.mark.filterwarnings("ignore:AG News train split not found")
def test_ag_news_bad_class(tmp_path):
    folder = tmp_path / "ag_news"
    folder.mkdir()
    (folder / "test.csv").write_text('"5","t","d"\n')
    with pytest.raises(InputError, match="line 1: class must be 1-4"):
        load_ag_news(tmp_path)


def _write_acl_imdb(root: Path, per_class: int = 10) -> None:
    for split in ("train", "test"):
        for polarity, ratings in (("neg", (1, 3)), ("pos", (8, 10))):
            folder = root / "aclImdb" / split / polarity
            folder.mkdir(parents=True)
            for i in range(per_class):
                rating = ratings[i % 2]
                text = f"{split} {polarity} review {i}<br />Ünïcode"
                (folder / f"{i}_{rating}.txt").write_text(text, encoding="utf-8")


def test_imdb_acl_tree_matches_jsonl(tmp_path):
    tree = tmp_path / "tree"
    _write_acl_imdb(tree / "imdb", per_class=12)
    ds = load_imdb(tree)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 22, "validation": 2, "test": 24}
    test = ds["test"]
    # neg then pos, each by numeric id (10 comes after 9, not after 1)
    assert test.texts[0].startswith("test neg review 0") and test.labels[0] == "negative"
    assert test.texts[10].startswith("test neg review 10<br />")
    assert test.texts[12].startswith("test pos review 0") and test.labels[12] == "positive"
    assert test.labels.count("positive") == 12

    # the same reviews as gzipped JSON lines give the same split
    jsonl = tmp_path / "jsonl" / "imdb"
    jsonl.mkdir(parents=True)
    for split in ("train", "test"):
        with gzip.open(jsonl / f"imdb_{split}.jsonl.gz", "wt", encoding="utf-8") as handle:
            for polarity, label in (("neg", 0), ("pos", 1)):
                for i in range(12):
                    text = f"{split} {polarity} review {i}<br />Ünïcode"
                    handle.write(
                        json.dumps({"id": f"{split}/{polarity}/{i}", "text": text, "label": label})
                        + "\n"
                    )
    from_jsonl = load_imdb(tmp_path / "jsonl")
    assert from_jsonl["validation"].texts == ds["validation"].texts
    assert from_jsonl["train"].labels == ds["train"].labels


def test_missing_dataset_files_name_paths(tmp_path):
    with pytest.raises(InputError) as info:
        load_meld(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "meld" / "train_sent_emo.csv") in message
    assert "--data-dir" in message and "EFT_DATA_DIR" in message
    with pytest.raises(InputError, match="imdb_train.jsonl.gz"):
        load_imdb(tmp_path)
    with pytest.raises(InputError, match=r"TREC\.train"):
        load_trec(tmp_path)
    with pytest.raises(InputError, match="data directory not found"):
        load_sst2(tmp_path / "nowhere")


def test_load_dispatch(tmp_path):
    assert DATASETS == ("meld", "iemocap", "imdb", "ag_news", "trec", "sst2")
    _write_ag_news(tmp_path / "ag_news")
    for alias in ("agnews", "ag-news", "AG_News"):
        assert load(alias, tmp_path).name == "ag_news"
    with pytest.raises(InputError, match="valid names: meld, iemocap, imdb, ag_news, trec, sst2"):
        load("mnist", tmp_path)
    with pytest.raises(InputError, match="unknown option.*accepted: validation_fraction, seed"):
        load("ag_news", tmp_path, fine=True)
    with pytest.raises(InputError, match="variant must be"):
        load("sst2", tmp_path, variant="phrase")


def test_hf_without_datasets_library(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError, match="pip install datasets"):
        load("hf:imdb")


def test_summary_and_subsample():
    split = Split(texts=[f"t{i}" for i in range(10)], labels=["a"] * 7 + ["b"] * 3)
    ds = Dataset("toy", {"test": split, "train": split}, ["b", "a", "c"])
    summary = ds.summary()
    assert list(summary) == ["train", "test"]
    assert summary["train"] == {"size": 10, "labels": {"b": 3, "a": 7, "c": 0}}
    small = subsample(split, 4, seed=1)
    assert len(small) == 4 and small.texts == sorted(small.texts, key=lambda t: int(t[1:]))
    assert subsample(split, 4, seed=1).texts == small.texts
    assert subsample(split, 50, seed=1) is split
    with pytest.raises(InputError):
        subsample(split, 0, seed=1)
    with pytest.raises(InputError, match="has 2 entries"):
        Split(texts=["a", "b", "c"], labels=["x", "y"])


# ------------------------------------------------------------------------------------------
# Generic reader
# ------------------------------------------------------------------------------------------


def _rows():
    return [("good film", "pos"), ('bad "movie", really', "neg"), ("fine", "pos")]


def test_read_csv_tsv_jsonl_and_gzip(tmp_path):
    expected = ([t for t, _ in _rows()], [lab for _, lab in _rows()])
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows((i, t, lab) for i, (t, lab) in enumerate(_rows()))
    assert read_labeled_file(tmp_path / "a.csv") == expected

    tsv = "sentence\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in _rows())
    (tmp_path / "a.tsv").write_text(tsv, encoding="utf-8")
    assert read_labeled_file(tmp_path / "a.tsv", text_column="sentence") == expected
    with gzip.open(tmp_path / "a.tsv.gz", "wt", encoding="utf-8") as handle:
        handle.write(tsv)
    assert read_labeled_file(str(tmp_path / "a.tsv.gz"), "sentence") == expected

    lines = [json.dumps({"review": t, "y": i % 2}) for i, (t, _) in enumerate(_rows())]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    texts, labels = read_labeled_file(tmp_path / "a.jsonl", "review", "y")
    assert texts == expected[0] and labels == ["0", "1", "0"]  # JSON ints -> strings
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    assert read_labeled_file(tmp_path / "a.jsonl.gz", "review", "y") == (texts, labels)
    # JSON numbers and booleans as Python spells them, as pandas and csv write them to a CSV
    values = [1, 1.0, 0.5, True, False]
    lines = [json.dumps({"text": "a text", "label": v}) for v in values]
    (tmp_path / "n.jsonl").write_text("\n".join(lines), encoding="utf-8")
    assert read_labeled_file(tmp_path / "n.jsonl")[1] == ["1", "1.0", "0.5", "True", "False"]


def test_multi_label_files_give_label_sets(tmp_path):
    rows = [("a goal", "sports|money"), ("a poem", ""), ("the market", " money | money ")]
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *rows])
    texts, labels = read_labeled_file(tmp_path / "a.csv", label_separator="|")
    assert texts == ["a goal", "a poem", "the market"]
    assert labels == [("sports", "money"), (), ("money",)]  # blank: no label; repeats once
    lines = [{"text": "a goal", "label": ["sports", 3]}, {"text": "a poem", "label": []}]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert read_labeled_file(path, label_separator=",")[1] == [("sports", "3"), ()]
    scalars = [
        {"text": "a", "label": 1.0},
        {"text": "b", "label": [1, 2.0]},
        {"text": "c", "label": True},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in scalars), encoding="utf-8")
    assert read_labeled_file(path, label_separator=",")[1] == [("1.0",), ("1", "2.0"), ("True",)]
    with pytest.raises(InputError, match="JSON list, not a single label.*--multi-label"):
        read_labeled_file(path)
    path.write_text(json.dumps({"text": "x", "label": {"a": 1}}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="'label' is not a list of labels"):
        read_labeled_file(path, label_separator=",")
    with pytest.raises(InputError, match="non-empty string"):
        read_labeled_file(path, label_separator="")


def test_text_pair_columns_give_text_pairs(tmp_path):
    from eft.benchmark import load_file_splits

    tsv = "sentence1\tsentence2\tlabel\na man sleeps\ta person rests\t1\nit rains\tit is dry\t0\n"
    (tmp_path / "pairs.tsv").write_text(tsv, encoding="utf-8")
    pairs = [("a man sleeps", "a person rests"), ("it rains", "it is dry")]
    read = read_labeled_file(tmp_path / "pairs.tsv", "sentence1", text_pair_column="sentence2")
    assert read == (pairs, ["1", "0"])
    assert (
        read_text_file(tmp_path / "pairs.tsv", "sentence1", text_pair_column="sentence2") == pairs
    )
    splits = load_file_splits(*[tmp_path / "pairs.tsv"] * 3, "sentence1", "label", "sentence2")
    assert [split.texts for split in splits] == [pairs] * 3
    with pytest.raises(InputError, match="column 'hypothesis' not found.*sentence2"):
        read_labeled_file(tmp_path / "pairs.tsv", "sentence1", text_pair_column="hypothesis")
    (tmp_path / "gap.tsv").write_text(tsv + "it snows\t\t1\n", encoding="utf-8")
    with pytest.raises(InputError, match="1 bad row.*data row 3.*empty 'sentence2'"):
        read_labeled_file(tmp_path / "gap.tsv", "sentence1", text_pair_column="sentence2")
    with pytest.warns(UserWarning, match="skipped 1 bad row"):
        kept = read_labeled_file(
            tmp_path / "gap.tsv", "sentence1", text_pair_column="sentence2", bad_rows="skip"
        )
    assert kept == (pairs, ["1", "0"])
    (tmp_path / "lines.txt").write_text("a man sleeps\n", encoding="utf-8")
    with pytest.raises(InputError, match="text pairs need a .csv, .tsv or .jsonl file"):
        read_text_file(tmp_path / "lines.txt", text_pair_column="sentence2")


def test_read_csv_with_bom_and_crlf(tmp_path):
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbftext,label\r\nh\xc3\xa9llo,x\r\n")
    assert read_labeled_file(tmp_path / "b.csv") == (["héllo"], ["x"])


def test_missing_column_suggests_closest(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\nhi,a\n")
    with pytest.raises(InputError) as info:
        read_labeled_file(tmp_path / "train.csv", text_column="txt")
    assert str(info.value) == (
        "column 'txt' not found in train.csv; available: text, label; did you mean 'text'?"
    )
    with pytest.raises(InputError, match="did you mean 'label'"):
        read_labeled_file(tmp_path / "train.csv", label_column="Label")
    with pytest.raises(InputError, match="column 'zzz' not found.*available: text, label"):
        read_labeled_file(tmp_path / "train.csv", label_column="zzz")
    # no close name: the option to choose one, as the command line and Python spell it
    with pytest.raises(InputError, match=r"choose one with --label-column \(label_column=\)"):
        read_labeled_file(tmp_path / "train.csv", label_column="zzz")


def test_missing_unsupported_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="file not found: .*nope.csv"):
        read_labeled_file(tmp_path / "nope.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(InputError, match=r"unsupported file type.*\.csv\[\.gz\], \.tsv"):
        read_labeled_file(tmp_path / "data.xlsx")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty.csv is empty"):
        read_labeled_file(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(InputError, match="header row but no data rows"):
        read_labeled_file(tmp_path / "header.csv")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="is empty"):
        read_labeled_file(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", \n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        read_labeled_file(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="is not a file"):
        read_labeled_file(tmp_path)


def test_bad_encoding_names_offset(tmp_path):
    (tmp_path / "latin.csv").write_bytes(b"text,label\ncaf\xe9,x\n")
    with pytest.raises(InputError) as info:
        read_labeled_file(tmp_path / "latin.csv")
    message = str(info.value)
    assert "not UTF-8" in message and "byte offset 14" in message and "0xe9" in message
    assert "re-encode" in message and "\n" not in message
    # past the first 1 MiB block, after a two-byte character split across the blocks' border
    body = b"text,label\n" + b"a" * ((1 << 20) - 12) + "\u00e9".encode() + b",x\nb\xe9,y\n"
    assert body[(1 << 20) - 1 : (1 << 20) + 1] == "\u00e9".encode()
    offset = body.index(b"\xe9,y")
    for name, data in (("big.csv", body), ("big.csv.gz", gzip.compress(body))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=f"byte 0xe9 at byte offset {offset}"):
            read_labeled_file(tmp_path / name)
    (tmp_path / "cut.txt").write_bytes(b"first\nsecond \xc3")  # a character cut at the end
    with pytest.raises(InputError, match="byte 0xc3 at byte offset 13"):
        read_text_file(tmp_path / "cut.txt")


def test_quoting_header_and_gzip_damage_are_named(tmp_path):
    """A quote never closed (csv's lax mode read the rest of the file into one field), a
    column named twice (the last one was read), blank lines before the header (taken for an
    empty file) and damaged gzip data (a zlib traceback), in memory and as a stream."""
    from eft.streaming import as_row_stream

    def read_both(path: Path):
        in_memory = read_labeled_file(path)
        streamed = list(as_row_stream(str(path)))
        assert [row[0] for row in streamed] == in_memory[0]
        return in_memory

    cases = {
        "open.csv": (
            'text,label\ngood,"pos\nbad film,neg\ngreat,pos\n',
            "opened on line 2 is never closed, so the 3 lines from there to the end of the file",
        ),
        "twice.csv": (
            "text,label,text\ngood,pos,ID1\n",
            "names the column(s) ['text'] more than once",
        ),
    }
    for name, (body, message) in cases.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
        with pytest.raises(InputError, match=re.escape(message)):
            read_both(tmp_path / name)
    # quoted fields over several lines, the last one too, are fine
    (tmp_path / "multi.csv").write_text('text,label\n"a\nb",pos\nc,neg\n"d\ne",neg\n')
    assert read_both(tmp_path / "multi.csv") == (["a\nb", "c", "d\ne"], ["pos", "neg", "neg"])
    (tmp_path / "unnamed.csv").write_text("text,label,,\ngood,pos,,\n")  # a spreadsheet's
    assert read_both(tmp_path / "unnamed.csv") == (["good"], ["pos"])
    (tmp_path / "blank.csv").write_text("\n\ntext,label\ngood,pos\n")
    assert read_both(tmp_path / "blank.csv") == (["good"], ["pos"])
    data = bytearray(gzip.compress(b"text,label\n" + b"good film,pos\n" * 200))
    data[20:50] = b"x" * 30
    (tmp_path / "damaged.csv.gz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="cannot read .*damaged gzip data"):
        read_both(tmp_path / "damaged.csv.gz")
    (tmp_path / "latin.csv.gz").write_bytes(gzip.compress(b"text,label\ncaf\xe9,x\n"))
    with pytest.raises(InputError, match=re.escape("`zcat latin.csv.gz | iconv -f latin1")):
        read_labeled_file(tmp_path / "latin.csv.gz")


def test_bad_rows_error_and_skip(tmp_path):
    content = "text,label\ngood,a\n,b\n   ,c\nno label,\nok,d\ntoo,many,fields\n"
    (tmp_path / "rows.csv").write_text(content)
    with pytest.raises(InputError) as info:
        read_labeled_file(tmp_path / "rows.csv")
    message = str(info.value)
    assert "4 bad row(s)" in message and "data row 2 (line 3)" in message
    assert "bad_rows='skip'" in message
    with pytest.warns(UserWarning, match="skipped 4 bad row"):
        texts, labels = read_labeled_file(tmp_path / "rows.csv", bad_rows="skip")
    assert texts == ["good", "ok"] and labels == ["a", "d"]
    with pytest.raises(InputError, match="bad_rows must be"):
        read_labeled_file(tmp_path / "rows.csv", bad_rows="ignore")
    # a bad record over several lines (a quoted text), after a blank line: its first line
    (tmp_path / "multi.csv").write_text('text,label\ngood,a\n\n"two\nlines",\nok,b\n')
    with pytest.raises(InputError, match=r"data row 2 \(line 4\): missing 'label'"):
        read_labeled_file(tmp_path / "multi.csv")

    lines = [
        '{"text": "a", "label": 0}',
        '{"text": 5, "label": 1}',
        '{"label": 1}',
        '{"text": "b", "label": null}',
        '{"text": "c", "label": "x"}',
    ]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines))
    with pytest.raises(InputError, match=r"3 bad row.*data row 2 \(line 2\): 'text' is a int"):
        read_labeled_file(tmp_path / "rows.jsonl")
    with pytest.warns(UserWarning, match="skipped 3"):
        assert read_labeled_file(tmp_path / "rows.jsonl", bad_rows="skip") == (
            ["a", "c"],
            ["0", "x"],
        )


def test_read_text_file(tmp_path):
    (tmp_path / "in.txt").write_text("first text\n\nsecond, text\n")
    assert read_text_file(tmp_path / "in.txt") == ["first text", "second, text"]
    (tmp_path / "in.csv").write_text("id,body\n1,hello\n2,world\n")
    assert read_text_file(tmp_path / "in.csv", text_column="body") == ["hello", "world"]
    with pytest.raises(InputError, match="did you mean 'body'"):
        read_text_file(tmp_path / "in.csv", text_column="bdy")
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n{"text": "y", "label": 3}\n')
    assert read_text_file(tmp_path / "in.jsonl") == ["x", "y"]
    with pytest.raises(InputError, match="is a .txt file, one text per line, without columns"):
        read_text_file(tmp_path / "in.txt", text_column="body")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(InputError, match="is empty"):
        read_text_file(tmp_path / "blank.txt")


def test_module_exports():
    assert set(datasets.__all__) >= {"load", "read_labeled_file", "subsample", "Split"}
