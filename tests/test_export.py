"""eft.export: the fitted model as one ONNX graph, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from eft import EFTClassifier
from eft.errors import InputError
from tests.test_classifier import (
    LABELS,
    PAIR_LABELS,
    PAIR_TEXTS,
    TEXTS,
    _config,
    _multi_label_config,
    _multi_label_data,
)

onnx = pytest.importorskip("onnx", reason="ONNX export needs the [onnx] extra")
onnxruntime = pytest.importorskip("onnxruntime", reason="the check needs the [onnx] extra")


def _run(path, model, texts):
    """The file's outputs for ``texts``, tokenized as its docstring tells a server to."""
    first = [t[0] for t in texts] if model.text_pairs_ else list(texts)
    second = [t[1] for t in texts] if model.text_pairs_ else None
    encoded = model.tokenizer_(
        first,
        second,
        padding=True,
        truncation=True,
        max_length=model.max_length_,
        return_tensors="np",
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}
    return session.run(None, feed)


@pytest.mark.parametrize("fixture,method", [("tiny_bert_dir", "eft"), ("tiny_roberta_dir", "bp")])
def test_the_onnx_graph_gives_the_models_scores_and_probabilities(
    fixture, method, request, tmp_path
):
    from eft.export import check_onnx, export_onnx

    config = _config(request.getfixturevalue(fixture), method=method, bp_epochs=1)
    clf = EFTClassifier(config).fit(TEXTS, LABELS, TEXTS[:16], LABELS[:16])
    path = export_onnx(clf, tmp_path / "out" / "model.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # one file
    # batches of another size and length than the traced ones (dynamic axes)
    texts = [*TEXTS[:5], "a text longer than any of the training texts, with unknown words"]
    scores, proba = _run(path, clf, texts)
    np.testing.assert_allclose(scores, clf._class_scores(texts), atol=1e-4)
    np.testing.assert_allclose(proba, clf.predict_proba(texts), atol=1e-4)
    assert clf.classes_[scores.argmax(1)].tolist() == clf.predict(texts).tolist()
    if method == "eft":  # the graph holds the fitted temperature, not a plain softmax
        assert clf.temperature_ != 1.0
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["eft_labels"]) == clf.classes_.tolist() == ["neg", "pos"]
    assert meta["eft_multi_label"] == "false" and meta["eft_max_length"] == str(clf.max_length_)
    check = check_onnx(clf, path, texts)
    assert check["same_predictions"] == 1.0 and check["max_abs_probability_difference"] < 1e-4
    clf._autocast = torch.bfloat16  # a model predicting in bf16 is checked in float32
    assert check_onnx(clf, path, texts) == check and clf._autocast == torch.bfloat16


def test_multi_label_and_text_pair_models_export(tiny_bert_dir, tmp_path):
    from eft.export import export_onnx

    texts, labels = _multi_label_data(120)
    config = _multi_label_config(tiny_bert_dir, tune_thresholds=True)
    tagger = EFTClassifier(config).fit(texts[:80], labels[:80], texts[80:], labels[80:])
    path = export_onnx(tagger, tmp_path / "tagger.onnx")
    scores, proba = _run(path, tagger, texts[80:])
    np.testing.assert_allclose(proba, tagger.predict_proba(texts[80:]), atol=1e-4)
    np.testing.assert_array_equal((proba > 0.5) * 1, tagger.predict(texts[80:]))  # own thresholds
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["eft_multi_label"] == "true"

    pairs = EFTClassifier(_config(tiny_bert_dir)).fit(PAIR_TEXTS * 2, PAIR_LABELS * 2)
    path = export_onnx(pairs, tmp_path / "pairs.onnx")
    scores, proba = _run(path, pairs, PAIR_TEXTS)  # segment ids come from the graph
    np.testing.assert_allclose(scores, pairs._class_scores(PAIR_TEXTS), atol=1e-4)
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["eft_text_pairs"] == "true"


def test_eft_export_command_and_refusals(tiny_bert_dir, tmp_path, capsys):
    from eft.cli import main
    from eft.export import export_onnx

    model_dir = tmp_path / "model"
    EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS).save_pretrained(model_dir)
    target = tmp_path / "model.onnx"
    assert main(["export", str(model_dir), "--output", str(target)]) == 0
    printed = capsys.readouterr().out
    assert f"written to {target}" in printed
    assert "checked with onnxruntime on 4 texts: 100.0 % the same predictions" in printed
    assert target.is_file()
    assert main(["export", str(model_dir), "--output", str(tmp_path / "model.bin")]) == 2
    assert "with the .onnx suffix" in capsys.readouterr().err
    with pytest.raises(InputError, match="is not fitted; call fit"):
        export_onnx(EFTClassifier(_config(tiny_bert_dir)), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    (tmp_path / "folder.onnx").mkdir()
    assert main(["export", str(model_dir), "--output", str(tmp_path / "folder.onnx")]) == 2
    assert "is a folder; give the path of the .onnx file" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging


@pytest.mark.parametrize(
    "package,quantize", [("onnxscript", None), ("onnxruntime.quantization", "int8")]
)
def test_missing_exporter_packages_are_named(
    package, quantize, tiny_bert_dir, tmp_path, monkeypatch
):
    import builtins

    from eft.export import export_onnx

    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name == package:
            raise ImportError(f"No module named {package!r}", name=package)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    with pytest.raises(InputError, match=rf"{package} is missing.*\[onnx\]"):
        export_onnx(clf, tmp_path / "model.onnx", quantize=quantize)
    assert not (tmp_path / "model.onnx").exists()


def test_int8_quantization_shrinks_the_graph_and_keeps_its_outputs_close(tiny_bert_dir, tmp_path):
    from eft.export import check_onnx, export_onnx

    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(TEXTS, LABELS)
    full = export_onnx(clf, tmp_path / "float.onnx")
    small = export_onnx(clf, tmp_path / "int8.onnx", quantize="int8")
    graph = onnx.load(str(small))
    ops = {node.op_type for node in graph.graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["eft_quantization"] == "int8" and json.loads(meta["eft_labels"]) == ["neg", "pos"]
    full_meta = {p.key: p.value for p in onnx.load(str(full)).metadata_props}
    assert full_meta["eft_quantization"] == "none"
    weights = {i.name: i for i in graph.graph.initializer}
    int8 = [w for w in weights.values() if w.data_type == onnx.TensorProto.INT8]
    assert int8 and small.stat().st_size < full.stat().st_size
    check = check_onnx(clf, small, TEXTS)
    assert check["same_predictions"] >= 0.75  # 8-bit weights move the scores a little
    assert 0 < check["max_abs_probability_difference"] < 0.2
    assert check_onnx(clf, full, TEXTS)["max_abs_probability_difference"] < 1e-4
    assert {p.name for p in tmp_path.iterdir()} == {"float.onnx", "int8.onnx"}  # no staging
    with pytest.raises(InputError, match="quantize must be one of int8"):
        export_onnx(clf, tmp_path / "x.onnx", quantize="int4")


def test_eft_export_quantized_and_checked_on_a_file(tiny_bert_dir, tmp_path, capsys):
    from eft.cli import main

    model_dir = tmp_path / "model"
    EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS).save_pretrained(model_dir)
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"review": t}) + "\n" for t in TEXTS[:10]))
    target = tmp_path / "model.onnx"
    args = ["export", str(model_dir), "--output", str(target), "--quantize", "int8"]
    assert main([*args, "--check-input", str(texts), "--text-column", "review"]) == 0
    printed = capsys.readouterr().out
    assert f"written to {target} (int8)" in printed
    assert "checked with onnxruntime on 10 texts: " in printed
    with pytest.raises(SystemExit) as exit_:
        main([*args[:4], "--quantize", "int4"])
    assert exit_.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    assert main([*args, "--text-pair-column", "other"]) == 2
    assert "--text-pair-column names a column of --check-input FILE" in capsys.readouterr().err


@pytest.mark.parametrize("pooling", ["mean", "cls_last4"])
def test_the_other_poolings_and_standardised_features_export(pooling, tiny_bert_dir, tmp_path):
    from eft.export import check_onnx, export_onnx

    config = _config(tiny_bert_dir, bp_epochs=0, pooling=pooling, standardize=True)
    clf = EFTClassifier(config).fit(TEXTS, LABELS)
    path = export_onnx(clf, tmp_path / f"{pooling}.onnx")
    texts = [*TEXTS[:3], "a text longer than any of the training texts, with unknown words"]
    scores, _ = _run(path, clf, texts)  # mean pooling masks the padding inside the graph
    np.testing.assert_allclose(scores, clf._class_scores(texts), atol=1e-4)
    assert check_onnx(clf, path, texts)["same_predictions"] == 1.0


def test_weights_beside_the_graph_have_a_name_of_their_own(tiny_bert_dir, tmp_path, monkeypatch):
    """Over 2 GiB the weights go to a file beside the graph; a crash between writing the
    new weights and the new graph paired the old graph with them (review I, F12)."""
    import eft.export
    from eft.export import export_onnx

    monkeypatch.setattr(eft.export, "_SINGLE_FILE_BYTES", 0)  # as a model over 2 GiB
    first = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    second = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0, seed=1)).fit(TEXTS, LABELS)
    path = export_onnx(first, tmp_path / "model.onnx")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0] == "model.onnx" and names[1].endswith(".data")
    assert names[1] in eft.export._external_files(path)
    scores, _ = _run(path, first, TEXTS[:4])
    np.testing.assert_allclose(scores, first._class_scores(TEXTS[:4]), atol=1e-4)
    replace = os.replace

    def crash_before_the_graph(source, target):
        if Path(target) == path:
            raise KeyboardInterrupt
        replace(source, target)

    monkeypatch.setattr(os, "replace", crash_before_the_graph)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(second, path)
    monkeypatch.setattr(os, "replace", replace)
    # the old graph still reads its own weights (the new ones lie beside, unread)
    scores, _ = _run(path, first, TEXTS[:4])
    np.testing.assert_allclose(scores, first._class_scores(TEXTS[:4]), atol=1e-4)
    export_onnx(second, path)  # a finished export removes the weights it replaced
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert len(kept) == 2 and names[1] not in kept  # the same weights as the crashed one
    scores, _ = _run(path, second, TEXTS[:4])
    np.testing.assert_allclose(scores, second._class_scores(TEXTS[:4]), atol=1e-4)


def test_a_model_the_exporter_cannot_trace_is_named_in_one_line(tiny_bert_dir, monkeypatch):
    """Longformer's and BigBird's exports failed with hundreds of lines of the exporter's
    traceback (review H, F7)."""
    from eft.export import export_onnx

    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)

    def fails(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression\nmore lines")

    monkeypatch.setattr(torch.onnx, "export", fails)
    message = "cannot trace this model (bert) to ONNX: RuntimeError: Could not guard on data"
    with pytest.raises(InputError, match=re.escape(message)):
        export_onnx(clf, "never.onnx")
