"""Tests for the EFT pipeline (eft.classifier, eft.backprop, eft.encoder) on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import eft.classifier
from eft import EFTClassifier, EFTConfig, InputError
from eft.classifier import elm_flops

POSITIVE = ["i love this movie", "great film", "good nice happy", "a really fine song"]
NEGATIVE = ["terrible awful film", "i hate this movie", "bad sad book", "an awful war game"]
TEXTS = (POSITIVE + NEGATIVE) * 8
LABELS = (["pos"] * 4 + ["neg"] * 4) * 8


def _config(model_dir, **overrides) -> EFTConfig:
    values = dict(
        model=str(model_dir),
        n_hidden=48,
        learning_rate=5e-4,
        batch_size=8,
        progress=False,
        device="cpu",
    )
    values.update(overrides)
    return EFTConfig(**values)


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_fit_save_load_gives_identical_predictions(fixture, request, tmp_path):
    model_dir = request.getfixturevalue(fixture)
    clf = EFTClassifier(_config(model_dir, bp_epochs=1)).fit(TEXTS, LABELS)
    assert clf.classes_.tolist() == ["neg", "pos"]
    assert set(clf.predict(TEXTS)) <= {"neg", "pos"}
    proba = clf.predict_proba(TEXTS)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(TEXTS))
    out = clf.save_pretrained(tmp_path / "model")
    names = {p.name for p in out.iterdir()}
    assert {"eft_config.json", "elm_head.safetensors", "config.json", "model.safetensors"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in names)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left
    loaded = EFTClassifier.from_pretrained(out, device="cpu")
    np.testing.assert_array_equal(loaded.predict(TEXTS), clf.predict(TEXTS))
    np.testing.assert_allclose(
        loaded.decision_function(TEXTS), clf.decision_function(TEXTS), rtol=1e-5, atol=1e-6
    )
    meta = json.loads((out / "eft_config.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["config"]["bp_epochs"] == 1


def test_class_weight_reaches_the_bp_loss_and_the_head(tiny_bert_dir):
    texts = POSITIVE * 2 + NEGATIVE * 6  # 8 pos, 24 neg
    labels = ["pos"] * 8 + ["neg"] * 24
    fits = {
        str(weights): EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, class_weight=weights))
        for weights in (None, "balanced", {"pos": 3.0})
    }
    for clf in fits.values():  # "balanced" crashed the float32 BP loss with float64 weights
        clf.fit(texts, labels)
    assert fits["None"].head_.class_weight is None
    assert fits["balanced"].head_.class_weight == {0: 32 / (2 * 24), 1: 32 / (2 * 8)}
    assert fits["{'pos': 3.0}"].head_.class_weight == {0: 1.0, 1: 3.0}
    losses = {name: clf.history_["bp_train_loss"][0] for name, clf in fits.items()}
    assert len(set(losses.values())) == 3  # the same seed and batches: only the weights differ
    # a label the data does not hold (a typo) is named, as scikit-learn does; a refit that
    # fails leaves no model that would map its scores onto the new labels
    refit = fits["None"].set_params(class_weight={"Pos": 3.0})
    with pytest.raises(InputError, match="class_weight names labels .*\\['Pos'\\]"):
        refit.fit(texts, labels)
    with pytest.raises(InputError, match="not fitted"):
        refit.predict(texts)
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    with pytest.raises(NotFittedError):  # as scikit-learn's own: neither labels nor head left
        check_is_fitted(refit)
    assert not hasattr(refit, "classes_") and not hasattr(refit, "head_")
    with pytest.raises(NotFittedError, match=r"call fit\(\) or from_pretrained"):
        EFTClassifier().predict(["a text"])


def test_scikit_learn_clone_params_and_grid_search(tiny_bert_dir):
    from sklearn.base import clone, is_classifier
    from sklearn.exceptions import FitFailedWarning
    from sklearn.model_selection import GridSearchCV, cross_val_score

    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1))
    assert is_classifier(clf)
    tags = clf.__sklearn_tags__()  # texts in, as a text vectorizer; label sets too
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert tags.classifier_tags.multi_label and tags.target_tags.two_d_labels
    # texts and labels are X and y, not metadata: routing lists fit's other arguments only
    routing = clf.get_metadata_routing()
    assert set(routing.fit.requests) == {
        "eval_texts",
        "eval_labels",
        "resume_from",
        "checkpoint_metadata",
        "callbacks",
        "sample_weight",
    }
    assert set(routing.score.requests) == {"sample_weight"}
    assert not routing.predict.requests and not routing.predict_proba.requests
    assert clf.get_params(deep=False) == {"config": clf.config}
    params = clf.get_params()
    assert params["n_hidden"] == 48 and params["bp_epochs"] == 1
    copy = clone(clf)
    assert copy.config == clf.config and copy.config is not clf.config
    copy.set_params(n_hidden=32, C=10.0)
    assert (copy.config.n_hidden, copy.config.C) == (32, 10.0)
    assert (clf.config.n_hidden, clf.config.C) == (48, 1.0)  # the original is untouched
    with pytest.raises(InputError, match="n_hiden"):
        copy.set_params(n_hiden=10)
    scores = cross_val_score(clf, TEXTS, LABELS, cv=2)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    search = GridSearchCV(clf, {"C": [0.1, 10.0]}, cv=2).fit(TEXTS, LABELS)
    assert search.best_params_["C"] in (0.1, 10.0)
    assert len(search.cv_results_["params"]) == 2
    # values are checked by fit, as in scikit-learn: an invalid candidate scores error_score
    # and the search goes on; fields that depend on each other may be set one at a time
    probe = clone(clf).set_params(bp_epochs=0)
    with pytest.warns(FitFailedWarning, match="n_hidden must be >= 1"):
        sizes = GridSearchCV(probe, {"n_hidden": [0, 16]}, cv=2, error_score=np.nan)
        sizes.fit(TEXTS, LABELS)
    assert np.isnan(sizes.cv_results_["mean_test_score"][0])
    assert sizes.best_params_ == {"n_hidden": 16}
    fused = clone(clf).set_params(fused_fraction=0.5)  # needs elm_from_last_epoch
    with pytest.raises(InputError, match="fused_fraction"):
        fused.fit(TEXTS, LABELS)
    fused.set_params(elm_from_last_epoch=True).config.validate()
    assert search.best_estimator_.config.C == search.best_params_["C"]
    assert set(search.predict(TEXTS)) <= {"neg", "pos"}
    assert not hasattr(clf, "classes_")  # the searches fit clones, never the estimator


def test_timings_cover_every_phase(tiny_bert_dir):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(TEXTS, LABELS)
    timings = clf.timings_
    for phase in ("bp", "feedforward", "elm", "train", "total"):
        assert phase in timings and timings[phase] >= 0
    assert timings["bp"] > 0 and timings["feedforward"] > 0 and timings["elm"] > 0
    assert timings["train"] == pytest.approx(
        timings["bp"] + timings["feedforward"] + timings["elm"]
    )
    phases = ("bp", "feedforward", "elm", "tokenize", "evaluation")
    assert sum(timings.get(p, 0.0) for p in phases) <= timings["total"]


def test_frozen_encoder_probe_and_integer_labels(tiny_bert_dir, tmp_path):
    labels = [1 if label == "pos" else 0 for label in LABELS]
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0, C=1e4)).fit(TEXTS, labels)
    assert clf.timings_["bp"] == 0.0
    assert clf.classes_.dtype.kind == "i"
    # 8 distinct texts, 48 hidden units and weak regularisation: the head fits them all
    assert clf.score(TEXTS, labels) == 1.0
    loaded = EFTClassifier.from_pretrained(clf.save_pretrained(tmp_path / "m"))
    assert loaded.predict(TEXTS[:3]).dtype.kind == "i"
    np.testing.assert_array_equal(loaded.predict(TEXTS), clf.predict(TEXTS))


def test_fused_mode_skips_the_feature_pass(tiny_bert_dir):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, elm_from_last_epoch=True))
    clf.fit(TEXTS, LABELS)
    assert clf.timings_["feedforward"] == 0.0
    assert clf.timings_["elm"] > 0
    assert clf.head_.n_samples_seen_ == len(TEXTS)
    assert set(clf.predict(TEXTS)) <= {"neg", "pos"}


def test_fused_fraction_passes_the_first_steps_samples_after_training(tiny_bert_dir):
    """fused_fraction=0.5: the last epoch's last half of steps feeds the head; the samples of
    its first half are passed through the final encoder, so every sample counts once."""
    config = _config(tiny_bert_dir, bp_epochs=2, elm_from_last_epoch=True, fused_fraction=0.5)
    clf = EFTClassifier(config).fit(TEXTS, LABELS)
    assert clf.head_.n_samples_seen_ == len(TEXTS)
    assert clf.timings_["feedforward"] > 0 and clf.timings_["elm"] > 0
    # the same BP run fully fused: same encoder, but statistics from train-mode features only
    full = EFTClassifier(_config(tiny_bert_dir, bp_epochs=2, elm_from_last_epoch=True))
    full.fit(TEXTS, LABELS)
    np.testing.assert_allclose(clf.features(TEXTS), full.features(TEXTS), rtol=1e-5, atol=1e-6)
    assert not np.allclose(clf.head_.gamma_.numpy(), full.head_.gamma_.numpy())
    for bad in (0.0, 1.5, "half"):
        with pytest.raises(InputError, match="fused_fraction must be (in|a number)"):
            _config(tiny_bert_dir, elm_from_last_epoch=True, fused_fraction=bad)
    with pytest.raises(InputError, match="fused_fraction applies to fused mode only"):
        _config(tiny_bert_dir, fused_fraction=0.5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_feature_pass_yields_compact_features(tiny_bert_dir, pooling):
    """A kept feature batch must not hold the batch's hidden states (CLS pooling is a view)."""
    from eft.encoder import TextEncoder, extract_features, load_backbone, tokenize

    backbone, tokenizer, _ = load_backbone(str(tiny_bert_dir))
    encoder = TextEncoder(backbone, pooling)
    ids = tokenize(tokenizer, TEXTS, 32)
    seen = 0
    for rows, features in extract_features(
        encoder, ids, int(tokenizer.pad_token_id), 16, torch.device("cpu")
    ):
        assert features.shape == (len(rows), encoder.feature_dim)
        nbytes = features.untyped_storage().nbytes()
        assert nbytes == features.numel() * features.element_size()
        seen += len(rows)
    assert seen == len(TEXTS)


def test_inference_passes_show_a_bar_only_when_they_take_a_while(
    tiny_bert_dir, monkeypatch, capsys
):
    from eft.encoder import TextEncoder, extract_features, load_backbone, tokenize

    backbone, tokenizer, _ = load_backbone(str(tiny_bert_dir))
    ids = tokenize(tokenizer, TEXTS, 32)

    def bar_text(delay: float) -> str:
        encoder, cpu = TextEncoder(backbone), torch.device("cpu")
        for _ in extract_features(encoder, ids, 0, 8, cpu, None, None, True, "scoring", delay):
            pass
        return capsys.readouterr().err

    assert "scoring" in bar_text(0.0) and bar_text(60.0) == ""  # tqdm's delay
    # predict, validation and features ask for a bar after 2 s, on the main process only
    calls = []

    def spy(*args, **kwargs):
        if "progress_delay" in kwargs:  # the inference passes (not the training feature pass)
            calls.append(kwargs)
        return extract_features(*args, **kwargs)

    monkeypatch.setattr(eft.classifier, "extract_features", spy)
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS, TEXTS, LABELS)
    assert [c["description"] for c in calls] == ["validation"]
    clf.set_params(progress=True).predict(TEXTS[:2])
    clf.features(TEXTS[:2])
    clf.is_main_process_ = False  # as on another rank of a distributed run
    clf.predict(TEXTS[:2])
    shown = [(c["description"], c["progress"], c["progress_delay"]) for c in calls[1:]]
    assert shown == [("predict", True, 2.0), ("features", True, 2.0), ("predict", False, 2.0)]
    assert calls[0]["progress"] is False  # progress=False in the fit's config


def test_head_feeder_joins_batches_and_copies_views(monkeypatch):
    """Fused mode's sink and partial pass add to the head in chunks of its batch_size rows,
    from copies: a pooled feature may be a view of a buffer that changes afterwards."""
    from eft.classifier import _HeadFeeder
    from eft.ielm import IELMClassifier

    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((130, 6)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 130))
    head = IELMClassifier(n_hidden=16, batch_size=50, random_state=0)
    sizes: list[int] = []
    partial_fit = IELMClassifier.partial_fit

    def recording(self, features, labels, **kwargs):
        sizes.append(len(features))
        return partial_fit(self, features, labels, **kwargs)

    monkeypatch.setattr(IELMClassifier, "partial_fit", recording)
    feeder = _HeadFeeder(head, 3, check_input=True)
    for start in range(0, 130, 20):
        hidden = torch.zeros(20, 2, 6)  # a batch's "hidden states"; the feature is a view
        rows = X[start : start + 20]
        hidden[: len(rows), 0] = rows
        feeder.add(hidden[: len(rows), 0], y[start : start + 20])
        hidden.fill_(float("nan"))  # the buffer is reused by the next step
    feeder.flush()
    assert sizes == [60, 60, 10]
    whole = IELMClassifier(n_hidden=16, random_state=0).fit(X.numpy(), y.numpy())
    np.testing.assert_allclose(head.gamma_.numpy(), whole.gamma_.numpy(), rtol=1e-10)
    np.testing.assert_allclose(head.lambda_.numpy(), whole.lambda_.numpy(), rtol=1e-10)


def test_train_backprop_sinks_the_last_steps_and_lists_the_others(tiny_bert_dir):
    from accelerate import Accelerator

    from eft.backprop import EncoderWithLinearHead, train_backprop
    from eft.encoder import LengthGroupedBatchSampler, TextEncoder, load_backbone, tokenize

    backbone, tokenizer, _ = load_backbone(str(tiny_bert_dir))
    ids = tokenize(tokenizer, TEXTS, 16)
    label_index = np.array([label == "pos" for label in LABELS], dtype=np.int64)
    config = _config(tiny_bert_dir)  # batch_size 8: 8 steps per epoch
    received: list[np.ndarray] = []
    _, result = train_backprop(
        EncoderWithLinearHead(TextEncoder(backbone, "cls"), 2),
        ids,
        label_index,
        int(tokenizer.pad_token_id),
        config,
        Accelerator(cpu=True),
        epochs=2,
        feature_sink=lambda features, labels: received.append(labels.numpy()),
        feature_sink_fraction=0.25,
    )
    last_epoch = LengthGroupedBatchSampler([len(s) for s in ids], 8, config.seed).batches(1)
    assert len(received) == 2  # ceil(0.25 * 8) steps of the last epoch only
    for batch, labels in zip(last_epoch[-2:], received, strict=True):
        np.testing.assert_array_equal(label_index[batch], labels)
    assert result.unfed_indices == [i for batch in last_epoch[:-2] for i in batch]


def test_validation_score_of_the_trained_model_is_the_i_elm_heads(tiny_bert_dir):
    # the per-epoch scores are the linear head's; the one a user compares is the model's
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(
        TEXTS, LABELS, TEXTS[8:24], LABELS[8:24]
    )
    assert len(clf.history_["bp_validation_accuracy"]) == 1
    assert clf.history_["validation_accuracy"] == clf.score(TEXTS[8:24], LABELS[8:24])
    probe = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(
        TEXTS, LABELS, TEXTS[8:24], LABELS[8:24]
    )  # k = 0: no BP epoch, still a validation score
    assert probe.history_["validation_accuracy"] == probe.score(TEXTS[8:24], LABELS[8:24])
    assert probe.timings_["evaluation"] > 0


def test_validation_data_calibrates_the_softmax_and_the_save_keeps_it(tiny_bert_dir, tmp_path):
    from scipy.special import softmax

    from eft.calibration import negative_log_likelihood

    texts, labels = TEXTS[8:40], LABELS[8:40]
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(TEXTS, LABELS, texts, labels)
    calibration = clf.history_["calibration"]
    assert calibration["temperature"] == clf.temperature_ and 0 < clf.temperature_ != 1.0
    assert calibration["validation_nll"] <= calibration["validation_nll_uncalibrated"]
    scores, index = clf._class_scores(texts), np.searchsorted(clf.classes_, labels)
    # two classes: decision_function is the second class's margin, as scikit-learn's
    margin = clf.decision_function(texts)
    assert margin.shape == (len(texts),)
    np.testing.assert_allclose(margin, scores[:, 1] - scores[:, 0])
    from sklearn.metrics import get_scorer, roc_auc_score

    auc = get_scorer("roc_auc")(clf, texts, labels)  # reads decision_function
    assert auc == pytest.approx(roc_auc_score(np.asarray(labels) == "pos", margin))
    assert calibration["validation_nll"] == pytest.approx(
        negative_log_likelihood(scores, index, clf.temperature_)
    )
    proba = clf.predict_proba(texts)  # softmax(scores / T), the same predictions
    np.testing.assert_allclose(proba, softmax(scores / clf.temperature_, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(texts))
    loaded = EFTClassifier.from_pretrained(clf.save_pretrained(tmp_path / "m"), device="cpu")
    assert loaded.temperature_ == clf.temperature_
    np.testing.assert_allclose(loaded.predict_proba(texts), proba, rtol=1e-5, atol=1e-7)
    # without validation data nothing is fitted: the plain softmax, as for an older save
    plain = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(TEXTS, LABELS)
    assert plain.temperature_ == 1.0 and "calibration" not in plain.history_
    np.testing.assert_allclose(
        plain.predict_proba(texts)[:, 1],
        1 / (1 + np.exp(-plain.decision_function(texts))),
        rtol=1e-5,
    )
    meta_file = tmp_path / "m" / "eft_config.json"
    meta = json.loads(meta_file.read_text())
    del meta["temperature"]
    meta_file.write_text(json.dumps(meta))
    assert EFTClassifier.from_pretrained(tmp_path / "m").temperature_ == 1.0
    for bad in (0, -1.0, "0.2", None):
        meta_file.write_text(json.dumps({**meta, "temperature": bad}))
        with pytest.raises(InputError, match="'temperature'.*positive number"):
            EFTClassifier.from_pretrained(tmp_path / "m")
    meta_file.write_text("[1, 2]")  # valid JSON, not an object: named, not an AttributeError
    with pytest.raises(InputError, match="is damaged: it holds a JSON list, not an object"):
        EFTClassifier.from_pretrained(tmp_path / "m")


def test_standard_fine_tuning_baseline(tiny_bert_dir, tmp_path):
    config = _config(tiny_bert_dir, method="bp", bp_epochs=3, early_stopping_patience=1)
    clf = EFTClassifier(config).fit(TEXTS, LABELS, TEXTS[:16], LABELS[:16])
    assert clf.head_ is None
    assert 1 <= len(clf.history_["bp_validation_accuracy"]) <= 3
    assert clf.history_["bp_best_epoch"] >= 1
    # the model kept is the best epoch's, and so is the validation score reported for it
    best = clf.history_["bp_validation_accuracy"][clf.history_["bp_best_epoch"] - 1]
    assert clf.history_["validation_accuracy"] == best == clf.score(TEXTS[:16], LABELS[:16])
    assert clf.timings_["elm"] == 0.0 and clf.timings_["feedforward"] == 0.0
    assert clf.temperature_ == 1.0  # cross-entropy logits: their softmax as they are
    out = clf.save_pretrained(tmp_path / "bp")
    assert (out / "linear_head.safetensors").is_file()
    loaded = EFTClassifier.from_pretrained(out)
    np.testing.assert_array_equal(loaded.predict(TEXTS), clf.predict(TEXTS))


def test_feature_passes_are_deterministic_in_eval_mode(tiny_bert_dir):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(TEXTS, LABELS)
    first = clf.features(TEXTS)
    second = clf.features(TEXTS)
    assert first.shape == (len(TEXTS), 32)
    np.testing.assert_array_equal(first, second)
    # and the same text gives the same features wherever it stands in the batch order
    np.testing.assert_allclose(clf.features(TEXTS[:1])[0], first[0], rtol=1e-5, atol=1e-6)


def test_bf16_on_cpu_is_opt_in_and_kept_after_loading(tiny_bert_dir, tmp_path):
    default = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    assert default._autocast is None  # "auto" keeps float32 on CPU
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0, mixed_precision="bf16"))
    clf.fit(TEXTS, LABELS)
    assert clf._autocast is torch.bfloat16
    fp32, bf16 = default.features(TEXTS), clf.features(TEXTS)
    assert bf16.dtype == np.float32 and not np.array_equal(fp32, bf16)  # bf16 did run
    assert np.linalg.norm(bf16 - fp32) / np.linalg.norm(fp32) < 0.02
    clf.save_pretrained(tmp_path / "bf16")
    loaded = EFTClassifier.from_pretrained(tmp_path / "bf16")
    assert loaded._autocast is torch.bfloat16
    np.testing.assert_array_equal(loaded.predict(TEXTS), clf.predict(TEXTS))
    # the predictions' precision chosen at load, as the device is; a save keeps the saved one
    plain = EFTClassifier.from_pretrained(tmp_path / "bf16", inference_precision="no")
    assert plain._autocast is None and plain.config.inference_precision == "no"
    assert not np.array_equal(plain.features(TEXTS), loaded.features(TEXTS))
    again = EFTClassifier.from_pretrained(plain.save_pretrained(tmp_path / "again"))
    assert again._autocast is torch.bfloat16
    with pytest.raises(InputError, match="inference_precision"):
        EFTClassifier.from_pretrained(tmp_path / "bf16", inference_precision="fp8")


def test_inference_precision_applies_to_eval_passes_only(tiny_bert_dir, tmp_path):
    """float32 BP epochs with a bf16 feature pass: the same encoder as a float32 run, other
    features; saved with the model. And the other way round."""
    fp32 = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, mixed_precision="no"))
    fp32.fit(TEXTS, LABELS)
    mixed = EFTClassifier(
        _config(tiny_bert_dir, bp_epochs=1, mixed_precision="no", inference_precision="bf16")
    ).fit(TEXTS, LABELS)
    assert fp32._autocast is None and mixed._autocast is torch.bfloat16
    a, b = fp32.model_.encoder.state_dict(), mixed.model_.encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # training did not change
    assert not np.array_equal(fp32.features(TEXTS), mixed.features(TEXTS))  # bf16 did run
    assert not torch.equal(fp32.head_.gamma_, mixed.head_.gamma_)  # the head saw bf16 features
    mixed.save_pretrained(tmp_path / "m")
    assert EFTClassifier.from_pretrained(tmp_path / "m")._autocast is torch.bfloat16
    other = EFTConfig(mixed_precision="bf16", inference_precision="no")
    assert eft.classifier._autocast_dtype(torch.device("cpu"), other) is None
    with pytest.raises(InputError, match="inference_precision"):
        EFTConfig(inference_precision="half")


@pytest.mark.parametrize("native_bf16", [True, False, None])
def test_bf16_on_a_cpu_without_native_bf16_warns(native_bf16, monkeypatch):
    """Emulated bf16 made the feature pass 6.4x slower on an AVX2 host: say so, once per
    place; a CPU with AVX512-BF16 or AMX, or one torch cannot probe, gets no warning."""
    import warnings

    isa = {"isa": "AVX2", "native_bf16": native_bf16}
    monkeypatch.setattr(eft.classifier, "cpu_instruction_set", lambda: isa)
    config = EFTConfig(mixed_precision="no", inference_precision="bf16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert eft.classifier._autocast_dtype(torch.device("cpu"), config) is torch.bfloat16
        assert eft.classifier._autocast_dtype(torch.device("cpu"), EFTConfig()) is None
    emulated = [w for w in caught if "emulated" in str(w.message)]
    assert len(emulated) == (1 if native_bf16 is False else 0)
    if emulated:
        assert emulated[0].category is RuntimeWarning
        assert "--inference-precision no" in str(emulated[0].message)


def test_same_seed_same_model(tiny_bert_dir):
    a = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, seed=3)).fit(TEXTS, LABELS)
    b = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, seed=3)).fit(TEXTS, LABELS)
    np.testing.assert_array_equal(a.decision_function(TEXTS), b.decision_function(TEXTS))


def test_iterations_and_pooling_options(tiny_bert_dir):
    for pooling in ("mean", "cls_last4"):
        clf = EFTClassifier(
            _config(tiny_bert_dir, bp_epochs=0, pooling=pooling, n_iter=3, feature_cache=True)
        ).fit(TEXTS, LABELS)
        assert clf.head_.n_features_in_ == (32 if pooling == "mean" else 3 * 32)  # 2 layers
        assert 1 <= clf.head_.n_iter_ <= 3


def test_standardize_uses_every_training_text_whatever_the_batch_size(tiny_bert_dir):
    """The head is centred and scaled by the features of every training text (one encoder
    pass, kept in memory for the head's two reads), not by the first eval batch of the
    length-sorted pass (the longest texts), so eval_batch_size does not change the model."""
    models = [
        EFTClassifier(
            _config(tiny_bert_dir, bp_epochs=0, pooling="mean", standardize=True, **size)
        ).fit(TEXTS, LABELS)
        for size in ({"eval_batch_size": 4}, {"eval_batch_size": 256})
    ]
    features = models[0].features(TEXTS)
    for clf in models:
        np.testing.assert_allclose(clf.head_.mean_.numpy(), features.mean(0), atol=1e-5)
        np.testing.assert_allclose(clf.head_.scale_.numpy(), features.std(0), rtol=1e-4)
    np.testing.assert_allclose(
        models[0].decision_function(TEXTS), models[1].decision_function(TEXTS), atol=1e-5
    )


def test_flops_per_phase(tiny_bert_dir, monkeypatch):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, flops=True)).fit(TEXTS, LABELS)
    flops = clf.flops_
    assert set(flops) == {"bp_feature_extractor", "bp_classifier", "feedforward", "elm"}
    assert flops["bp_classifier"] == 3 * 2 * len(TEXTS) * 32 * 2  # fwd + 2 bwd matmuls
    assert flops["bp_feature_extractor"] > 2 * flops["feedforward"] > 0
    assert flops["elm"] == int(elm_flops(len(TEXTS), 32, 48, 2, 1))
    # validation passes after each epoch are not training FLOPs (as in timings_), and fused
    # mode's head statistics, fed inside the BP phase, are the head's (elm_flops counts them)
    validated = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, flops=True))
    validated.fit(TEXTS, LABELS, TEXTS[:16], LABELS[:16])
    assert validated.flops_["bp_feature_extractor"] == flops["bp_feature_extractor"]
    assert validated.flops_["evaluation"] == flops["feedforward"] // 4 + 16 * 2 * 32 * 2
    from functools import partial

    small_chunks = partial(eft.classifier.IELMClassifier, batch_size=8)  # fed during BP
    monkeypatch.setattr(eft.classifier, "IELMClassifier", small_chunks)
    fused = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, flops=True, elm_from_last_epoch=True))
    fused.fit(TEXTS, LABELS)
    assert fused.flops_["bp_feature_extractor"] == flops["bp_feature_extractor"]


def test_score_checks_its_labels_as_fit_does(tiny_bert_dir):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    assert clf.score(TEXTS, LABELS) == np.mean(clf.predict(TEXTS) == np.asarray(LABELS))
    assert clf.score(TEXTS, np.asarray(LABELS)) == clf.score(TEXTS, LABELS)
    right = clf.predict(TEXTS) == np.asarray(LABELS)  # weighted as scikit-learn's score
    weights = np.arange(1, len(TEXTS) + 1, dtype=float)
    assert clf.score(TEXTS, LABELS, sample_weight=weights) == pytest.approx(
        (weights * right).sum() / weights.sum()
    )
    # each of these gave a number (label sets broadcast, one label for all, unknown labels)
    with pytest.raises(InputError, match="label"):
        clf.score(TEXTS[:2], [["pos"], ["neg"]])
    with pytest.raises(InputError, match="2 scoring texts but 1 label"):
        clf.score(TEXTS[:2], ["pos"])
    with pytest.raises(InputError, match="Scoring labels not seen in training: \\['meh'\\]"):
        clf.score(TEXTS[:2], ["meh", "neg"])
    with pytest.raises(InputError, match="not seen in training: \\[0, 1\\]"):  # ints, not names
        clf.score(TEXTS[:2], [0, 1])


def test_input_errors(tiny_bert_dir, tmp_path):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0))
    with pytest.raises(InputError, match=r"single class \('pos'\);"):
        clf.fit(TEXTS, ["pos"] * len(TEXTS))
    last = len(TEXTS) - 1  # positions counted as Python counts them, and said so
    with pytest.raises(InputError, match=f"empty or not strings \\(first at index {last}, count"):
        clf.fit(TEXTS[:-1] + [""], LABELS)
    with pytest.raises(InputError, match="texts but"):
        clf.fit(TEXTS, LABELS[:-1])
    with pytest.raises(InputError, match="not seen in training: \\['meh'\\]"):
        clf.fit(TEXTS, LABELS, ["so so"], ["meh"])
    # one without the other: an AttributeError on None before, or the labels ignored
    for eval_texts, eval_labels in ((["so so"], None), (None, ["pos"])):
        with pytest.raises(InputError, match="eval_texts and eval_labels go together"):
            clf.fit(TEXTS, LABELS, eval_texts, eval_labels)
    for unfitted in (clf.predict, clf.features):
        with pytest.raises(InputError, match="not fitted"):
            unfitted(["x"])
    with pytest.raises(InputError, match="not one string"):
        clf.fit("one long text", ["pos"])
    fitted = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    with pytest.raises(InputError, match=r"not one string: pass \[text\]"):
        fitted.predict("i love this movie")
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        EFTClassifier(_config(tmp_path, bp_epochs=0)).fit(TEXTS, LABELS)
    with pytest.raises(InputError, match="bp_epochs"):
        EFTConfig(method="bp", bp_epochs=0)
    baseline = EFTClassifier(_config(tiny_bert_dir, method="bp", early_stopping_patience=2))
    with pytest.raises(InputError, match="Early stopping .* needs validation data"):
        baseline.fit(TEXTS, LABELS)
    eft_with_patience = EFTClassifier(_config(tiny_bert_dir, early_stopping_patience=2))
    with pytest.raises(InputError, match="early_stopping_patience stops standard fine-tuning"):
        eft_with_patience.fit(TEXTS, LABELS, TEXTS[:8], LABELS[:8])  # was silently ignored


def test_load_refuses_incomplete_or_incompatible_folders(tiny_bert_dir, tmp_path):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    out = clf.save_pretrained(tmp_path / "m")
    (out / "elm_head.safetensors").rename(tmp_path / "head")
    with pytest.raises(InputError, match="elm_head.safetensors is missing"):
        EFTClassifier.from_pretrained(out)
    (tmp_path / "head").rename(out / "elm_head.safetensors")
    meta = json.loads((out / "eft_config.json").read_text())
    meta["format_version"] = 99
    (out / "eft_config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="format_version"):
        EFTClassifier.from_pretrained(out)
    with pytest.raises(InputError, match="eft_config.json is missing"):
        EFTClassifier.from_pretrained(tiny_bert_dir)
    meta["format_version"] = 1
    # without tokenizer.json a tokenizer loads with a handful of tokens: every text [UNK]
    assert "tokenizer.json" in meta["tokenizer_files"] and meta["tokenizer_size"] > 10
    (out / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    (out / "eft_config.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="is incomplete: tokenizer.json is missing"):
        EFTClassifier.from_pretrained(out)
    (tmp_path / "tokenizer.json").rename(out / "tokenizer.json")
    (out / "eft_config.json").write_text(json.dumps({**meta, "tokenizer_size": 5}))
    with pytest.raises(InputError, match="the tokenizer there has .* tokens, but the model was"):
        EFTClassifier.from_pretrained(out)
    # labels that do not match the head's outputs (a hand-edited file)
    (out / "eft_config.json").write_text(json.dumps({**meta, "labels": ["a", "b", "c"]}))
    with pytest.raises(InputError, match="lists 3 labels, but the head has 2 outputs"):
        EFTClassifier.from_pretrained(out)
    for separator in ("", 3):  # a hand-edited multi-label separator
        (out / "eft_config.json").write_text(json.dumps({**meta, "label_separator": separator}))
        with pytest.raises(InputError, match="'label_separator' must be a non-empty string"):
            EFTClassifier.from_pretrained(out)
    older = {
        k: v for k, v in meta.items() if not k.startswith("tokenizer_") and k != "label_separator"
    }
    (out / "eft_config.json").write_text(json.dumps(older))  # saves before these fields
    assert EFTClassifier.from_pretrained(out).predict(TEXTS).tolist() == clf.predict(TEXTS).tolist()


def test_gpu_trained_model_loads_on_cpu(tiny_bert_dir, tmp_path):
    """A head saved from CUDA tensors is mapped to the CPU (simulated through the metadata)."""
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    clf.head_.device = "cuda"
    out = clf.save_pretrained(tmp_path / "m")
    meta = json.loads((out / "eft_config.json").read_text())
    meta["config"]["device"] = "cuda"
    # float32 on both sides: bf16 autocast on a GPU flipped near-ties of this random model
    # (8 of 64 texts on an H200)
    meta["config"]["mixed_precision"] = "no"
    (out / "eft_config.json").write_text(json.dumps(meta))
    loaded = EFTClassifier.from_pretrained(
        out, device="cpu" if not torch.cuda.is_available() else "cuda"
    )
    np.testing.assert_array_equal(loaded.predict(TEXTS), clf.predict(TEXTS))


def test_an_explicit_gpu_that_is_not_there_is_an_error(tiny_bert_dir, monkeypatch):
    """accelerate fell back to the CPU without a word when `device="cuda"` found no GPU (a CPU
    build of torch, a broken driver), ran `cuda:1` on GPU 0, and took any string ("gpu")."""
    from eft.classifier import _select_cuda_device

    with pytest.raises(InputError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        EFTConfig(device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="sees no CUDA GPU .* Use device 'cpu' or 'auto'"):
        EFTClassifier(_config(tiny_bert_dir, device="cuda")).fit(TEXTS, LABELS)
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _select_cuda_device("cuda")
    _select_cuda_device("cuda:1")
    assert chosen == [1]  # cuda:1 becomes the current GPU, which accelerate's "cuda" means
    with pytest.raises(InputError, match="sees 2 GPU"):
        _select_cuda_device("cuda:2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="CUDA_VISIBLE_DEVICES"):
        _select_cuda_device("cuda:1")


def test_cpu_load_after_a_gpu_fit_in_the_same_process(tiny_bert_dir, tmp_path):
    """accelerate's process-wide state, left on a GPU by a fit, refused `device="cpu"`: on an
    H200, `from_pretrained(saved, device="cpu")` after a CUDA fit raised "AcceleratorState has
    already been initialized". Simulated here by marking that state as a CUDA one."""
    from accelerate.state import AcceleratorState, PartialState

    from eft.classifier import _accelerator

    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    out = clf.save_pretrained(tmp_path / "m")
    _accelerator(EFTConfig(device="cpu"))  # the state exists, as after any fit
    try:
        for state in (PartialState._shared_state, AcceleratorState._shared_state):
            state["device"] = torch.device("cuda")
        loaded = EFTClassifier.from_pretrained(out, device="cpu")
        assert loaded.device_.type == "cpu"
        assert PartialState._shared_state["device"].type == "cpu"
        np.testing.assert_array_equal(loaded.predict(TEXTS), clf.predict(TEXTS))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_device_side_checks_and_timers_give_the_same_model(tiny_bert_dir, monkeypatch):
    """The GPU code path keeps per-batch checks on the device (forced here on the CPU): the
    fused head via partial_fit(check_input=False), the NaN flags read once per pass."""
    import eft.ielm

    for fused in (False, True):
        config = _config(tiny_bert_dir, bp_epochs=1, elm_from_last_epoch=fused)
        reference = EFTClassifier(config).fit(TEXTS, LABELS)
        with monkeypatch.context() as patch:
            patch.setattr(eft.classifier, "_defers_host_checks", lambda device: True)
            patch.setattr(eft.ielm, "_keeps_checks_on_device", lambda X: True)
            deferred = EFTClassifier(config).fit(TEXTS, LABELS)
        np.testing.assert_allclose(
            deferred.head_.gamma_.numpy(), reference.head_.gamma_.numpy(), rtol=1e-6
        )
        np.testing.assert_array_equal(deferred.predict(TEXTS), reference.predict(TEXTS))
        assert deferred.timings_["elm"] > 0 and deferred.timings_["feedforward"] >= 0


# -- text pairs (sentence-pair tasks) ---------------------------------------------------------

PREMISES = ["i love this movie", "the team won the game", "the stock price rise", "a big city"]
PAIR_TEXTS = [(p, p) for p in PREMISES] + [
    ("i love this movie", "i hate this movie"),
    ("the team won the game", "the team lost the game"),
    ("the stock price rise", "the stock price fall"),
    ("a big city", "a small city"),
]
PAIR_LABELS = ["same"] * 4 + ["different"] * 4


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_text_pairs_are_encoded_as_the_tokenizer_encodes_them(fixture, request):
    from transformers import AutoModel, AutoTokenizer

    from eft.encoder import TextEncoder, pad_batch, token_types, tokenize

    model_dir = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    firsts, seconds = zip(*PAIR_TEXTS, strict=True)
    reference = tokenizer(list(firsts), list(seconds), truncation=True, max_length=9)
    ids = tokenize(tokenizer, PAIR_TEXTS, 9)
    assert ids == [list(x) for x in reference["input_ids"]]
    assert max(len(x) for x in ids) == 9  # truncated, longest segment first
    batch = pad_batch(ids, tokenizer.pad_token_id)
    backbone = AutoModel.from_pretrained(model_dir)
    encoder = TextEncoder(backbone, "cls", tokenizer.sep_token_id)
    if "token_type_ids" in reference:
        padded = tokenizer.pad(dict(reference), padding=True, return_tensors="pt")
        derived = token_types(batch["input_ids"], batch["attention_mask"], tokenizer.sep_token_id)
        assert torch.equal(derived, padded["token_type_ids"] * batch["attention_mask"])
        assert derived.sum() > 0  # segment B is there
    if backbone.config.type_vocab_size > 1:  # BERT: segment B gets its own embedding
        assert encoder.pair_separator_id == tokenizer.sep_token_id
        backbone.eval()
        with torch.no_grad():
            ours = encoder(**batch)
            plain = TextEncoder(backbone, "cls")(**batch)
            expected = backbone(
                **batch,
                token_type_ids=token_types(
                    batch["input_ids"], batch["attention_mask"], tokenizer.sep_token_id
                ),
            ).last_hidden_state[:, 0]
        torch.testing.assert_close(ours, expected)
        assert not torch.allclose(ours, plain)
    else:  # RoBERTa: one token type, nothing to set
        assert encoder.pair_separator_id is None


@pytest.mark.filterwarnings("ignore:The softmax temperature fitted on 8")  # tiny, all right
def test_text_pairs_fit_save_load_and_refuse_the_other_kind(tiny_bert_dir, tmp_path):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(
        PAIR_TEXTS * 4, PAIR_LABELS * 4, PAIR_TEXTS, PAIR_LABELS
    )
    assert clf.text_pairs_ is True
    assert clf.model_.encoder.pair_separator_id is not None
    as_lists = [list(pair) for pair in PAIR_TEXTS]  # lists work as tuples
    np.testing.assert_array_equal(clf.predict(as_lists), clf.predict(PAIR_TEXTS))
    assert clf.features(PAIR_TEXTS).shape == (len(PAIR_TEXTS), 32)
    out = clf.save_pretrained(tmp_path / "pairs")
    assert json.loads((out / "eft_config.json").read_text())["text_pairs"] is True
    loaded = EFTClassifier.from_pretrained(out, device="cpu")
    assert loaded.text_pairs_ is True
    np.testing.assert_allclose(
        loaded.decision_function(PAIR_TEXTS),
        clf.decision_function(PAIR_TEXTS),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(InputError, match="trained on text pairs.*one string per text|pass \\(text"):
        loaded.predict(["i love this movie"])
    single = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    assert single.text_pairs_ is False and single.model_.encoder.pair_separator_id is None
    with pytest.raises(InputError, match="trained on single texts"):
        single.predict(PAIR_TEXTS)
    with pytest.raises(InputError, match="both be text pairs or both single texts"):
        EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(
            TEXTS, LABELS, PAIR_TEXTS, PAIR_LABELS
        )
    with pytest.raises(InputError, match="1 training text pair.*first at index 2, counting from 0"):
        EFTClassifier(_config(tiny_bert_dir)).fit(
            PAIR_TEXTS[:2] + ["one text"] + PAIR_TEXTS[3:], PAIR_LABELS
        )
    with pytest.raises(InputError, match="1 training text pair"):
        EFTClassifier(_config(tiny_bert_dir)).fit(PAIR_TEXTS[:7] + [("a text", " ")], PAIR_LABELS)


def _multi_label_data(n: int = 300, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Texts made of the words of 0-3 topics; their labels are those topics."""
    rng = np.random.default_rng(seed)
    topics = {
        "sports": "team game won lost",
        "money": "stock market price rise",
        "war": "war peace president country",
    }
    texts, labels = [], []
    for _ in range(n):
        chosen = [topic for topic in topics if rng.random() < 0.5]
        words = [w for t in chosen for w in rng.choice(topics[t].split(), 2)]
        texts.append(" ".join(words) or "the movie")
        labels.append(chosen)
    return texts, labels


def _multi_label_config(model_dir, **overrides) -> EFTConfig:
    values = dict(bp_epochs=1, n_hidden=500, C=100.0, learning_rate=1e-3)
    return _config(model_dir, **{**values, **overrides})


def test_multi_label_fit_predict_save_load(tiny_bert_dir, tmp_path):
    texts, labels = _multi_label_data()
    clf = EFTClassifier(_multi_label_config(tiny_bert_dir))
    clf.fit(texts[:240], labels[:240], texts[240:], labels[240:])
    assert clf.multi_label_ is True
    assert clf.classes_.tolist() == ["money", "sports", "war"]
    predicted = clf.predict(texts[240:])
    proba = clf.predict_proba(texts[240:])
    assert predicted.shape == proba.shape == (60, 3)
    np.testing.assert_array_equal(predicted, (proba > 0.5).astype(int))
    threshold, temperature = 0.5, clf.temperature_  # I-ELM outputs onto 0/1 rows
    np.testing.assert_allclose(
        proba,
        1 / (1 + np.exp(-(clf.decision_function(texts[240:]) - threshold) / temperature)),
        rtol=1e-5,
    )
    # 8 label sets, 1/8 by chance and 0 for "no label ever" (the BP stage's linear head
    # after one epoch): the head learns the topics
    accuracy = clf.score(texts[240:], labels[240:])
    assert accuracy > 0.7
    assert clf.history_["validation_accuracy"] == pytest.approx(accuracy)
    assert clf.history_["calibration"]["validation_nll"] < 0.3  # mean binary log-loss
    assert clf.history_["calibration"]["validation_nll_uncalibrated"] > 0.5
    # classes_[row == 1] names each text's labels: as many sets are right as score counts
    as_sets = [set(clf.classes_[row == 1].tolist()) for row in predicted]
    assert np.mean([a == set(b) for a, b in zip(as_sets, labels[240:], strict=True)]) == accuracy
    out = clf.save_pretrained(tmp_path / "multi")
    assert json.loads((out / "eft_config.json").read_text())["multi_label"] is True
    loaded = EFTClassifier.from_pretrained(out, device="cpu")
    assert loaded.multi_label_ is True
    assert clf.label_separator_ is None and loaded.label_separator_ is None  # sets given
    np.testing.assert_allclose(loaded.predict_proba(texts[240:]), proba, rtol=1e-5, atol=1e-6)
    assert loaded.score(texts[240:], labels[240:]) == accuracy
    # a 0/1 matrix trains the same model, its columns named 0..L-1
    matrix = np.array([[int(c in row) for c in ["money", "sports", "war"]] for row in labels])
    by_matrix = EFTClassifier(_multi_label_config(tiny_bert_dir)).fit(texts[:240], matrix[:240])
    assert by_matrix.classes_.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(
        by_matrix.predict(texts[240:]),
        EFTClassifier(_multi_label_config(tiny_bert_dir))
        .fit(texts[:240], labels[:240])
        .predict(texts[240:]),
    )
    assert by_matrix.score(texts[240:], matrix[240:]) == pytest.approx(
        float((by_matrix.predict(texts[240:]) == matrix[240:]).all(1).mean())
    )


@pytest.mark.parametrize("method,fused", [("eft", True), ("bp", False)])
def test_multi_label_fused_mode_and_the_baseline(tiny_bert_dir, method, fused):
    texts, labels = _multi_label_data()
    clf = EFTClassifier(
        _multi_label_config(
            tiny_bert_dir, method=method, elm_from_last_epoch=fused, bp_epochs=2, n_iter=1
        )
    ).fit(texts[:240], labels[:240], texts[240:], labels[240:])
    proba = clf.predict_proba(texts[240:])
    np.testing.assert_array_equal(clf.predict(texts[240:]), (proba > 0.5).astype(int))
    assert len(clf.history_["bp_train_loss"]) == 2
    if method == "bp":  # the linear head's logits, a sigmoid each (BCE in the BP stage)
        assert clf.head_ is None and clf.temperature_ == 1.0
        logits = clf.decision_function(texts[240:])
        np.testing.assert_allclose(proba, 1 / (1 + np.exp(-logits)), rtol=1e-5)
        assert clf.history_["bp_train_loss"][1] < clf.history_["bp_train_loss"][0]
    else:  # fused: the head's statistics come from the BP epoch's features
        assert clf.timings_["feedforward"] == 0.0
        assert clf.score(texts[240:], labels[240:]) > 0.5


@pytest.mark.parametrize("method", ["eft", "bp"])
def test_multi_label_thresholds_tuned_on_validation_data(tiny_bert_dir, tmp_path, method):
    from sklearn.metrics import f1_score

    texts, labels = _multi_label_data()
    config = _multi_label_config(tiny_bert_dir, method=method, tune_thresholds=True)
    clf = EFTClassifier(config).fit(texts[:200], labels[:200], texts[200:], labels[200:])
    fixed = 0.5 if method == "eft" else 0.0
    assert clf.history_["thresholds"]["fixed"] == fixed
    assert clf.thresholds_.shape == (3,)
    np.testing.assert_array_equal(clf.thresholds_, clf.history_["thresholds"]["tuned"])
    scores = clf.decision_function(texts[200:])
    targets = np.array([[int(c in row) for c in clf.classes_] for row in labels[200:]])
    for j in range(3):  # each label's validation F1 is at least the fixed threshold's
        tuned = f1_score(targets[:, j], scores[:, j] > clf.thresholds_[j])
        assert tuned >= f1_score(targets[:, j], scores[:, j] > fixed)
    # predict and predict_proba use each label's threshold
    np.testing.assert_array_equal(clf.predict(texts[200:]), (scores > clf.thresholds_) * 1)
    proba = clf.predict_proba(texts[200:])
    np.testing.assert_allclose(
        proba, 1 / (1 + np.exp(-(scores - clf.thresholds_) / clf.temperature_)), rtol=1e-5
    )
    assert clf.history_["validation_accuracy"] == pytest.approx(
        clf.score(texts[200:], labels[200:])
    )
    out = clf.save_pretrained(tmp_path / "tuned")
    loaded = EFTClassifier.from_pretrained(out, device="cpu")
    np.testing.assert_array_equal(loaded.thresholds_, clf.thresholds_)
    np.testing.assert_array_equal(loaded.predict(texts[200:]), clf.predict(texts[200:]))
    # a damaged field is refused; an older save (no field) reads as the fixed threshold
    meta = json.loads((out / "eft_config.json").read_text())
    for bad in ([0.5, 0.5], [0.5, "x", 0.5], [0.5, float("nan"), 0.5]):
        (out / "eft_config.json").write_text(json.dumps({**meta, "thresholds": bad}))
        with pytest.raises(InputError, match="'thresholds' must list one finite number"):
            EFTClassifier.from_pretrained(out, device="cpu")
    del meta["thresholds"]
    (out / "eft_config.json").write_text(json.dumps(meta))
    np.testing.assert_array_equal(
        EFTClassifier.from_pretrained(out, device="cpu").thresholds_, [fixed] * 3
    )


def test_bp_thresholds_tuned_on_the_kept_epochs_logits_without_another_pass(
    tiny_bert_dir, monkeypatch
):
    from eft.calibration import fit_label_thresholds

    passes = []
    scores_of = EFTClassifier._scores

    def counting(self, model, input_ids, description="predict"):
        passes.append(description)
        return scores_of(self, model, input_ids, description)

    monkeypatch.setattr(EFTClassifier, "_scores", counting)
    texts, labels = _multi_label_data()
    config = _multi_label_config(
        tiny_bert_dir, method="bp", bp_epochs=3, early_stopping_patience=3, tune_thresholds=True
    )
    clf = EFTClassifier(config).fit(texts[:200], labels[:200], texts[200:], labels[200:])
    assert passes == ["validation"] * 3  # one per epoch, none after training
    targets = np.array([[int(c in row) for c in clf.classes_] for row in labels[200:]])
    logits = clf.decision_function(texts[200:])  # the kept epoch's model
    np.testing.assert_array_equal(clf.thresholds_, fit_label_thresholds(logits, targets, 0.0))
    kept = clf.history_["bp_best_epoch"]
    fixed = clf.history_["thresholds"]["validation_accuracy_fixed"]  # at the logits' 0
    assert fixed == clf.history_["bp_validation_accuracy"][kept - 1]


def test_tune_thresholds_refusals(tiny_bert_dir):
    texts, labels = _multi_label_data(40)
    with pytest.raises(InputError, match="thresholds on validation data"):
        EFTClassifier(_multi_label_config(tiny_bert_dir, tune_thresholds=True)).fit(texts, labels)
    with pytest.raises(InputError, match="tune_thresholds chooses each label's threshold"):
        EFTClassifier(_config(tiny_bert_dir, tune_thresholds=True)).fit(
            TEXTS, LABELS, TEXTS, LABELS
        )
    with pytest.raises(InputError, match="tune_thresholds must be true or false"):
        _config(tiny_bert_dir, tune_thresholds="yes")
    single = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    assert single.thresholds_ is None
    fixed = EFTClassifier(_multi_label_config(tiny_bert_dir, bp_epochs=0)).fit(texts, labels)
    np.testing.assert_array_equal(fixed.thresholds_, [0.5] * 3)


def test_multi_label_cross_validation_takes_the_0_1_matrix(tiny_bert_dir):
    from sklearn.model_selection import cross_val_score

    texts, labels = _multi_label_data(150)
    matrix = np.array([[int(c in row) for c in ["money", "sports", "war"]] for row in labels])
    clf = EFTClassifier(_multi_label_config(tiny_bert_dir, bp_epochs=0))
    scores = cross_val_score(clf, texts, matrix, cv=3)  # KFold; score: subset accuracy
    assert scores.shape == (3,) and (scores > 1 / 8).all()


def test_multi_label_refusals(tiny_bert_dir):
    texts, labels = _multi_label_data(40)
    with pytest.raises(InputError, match=r"mix label sets.*first at index 3 \(counting from 0\)"):
        EFTClassifier(_multi_label_config(tiny_bert_dir)).fit(
            texts[:6], [["a"], ["b"], [], "a", ["a", "b"], ["b"]]
        )
    with pytest.raises(InputError, match="must hold only 0 and 1"):
        EFTClassifier(_multi_label_config(tiny_bert_dir)).fit(texts[:4], np.full((4, 2), 2))
    with pytest.raises(InputError, match="class_weight='balanced' is for single-label data"):
        EFTClassifier(_multi_label_config(tiny_bert_dir, class_weight="balanced")).fit(
            texts, labels
        )
    with pytest.raises(InputError, match="label_smoothing=0.1 is for single-label"):
        EFTClassifier(_multi_label_config(tiny_bert_dir, label_smoothing=0.1)).fit(texts, labels)
    with pytest.raises(InputError, match="validation labels are one label per text.*multi-label"):
        EFTClassifier(_multi_label_config(tiny_bert_dir)).fit(
            texts, labels, texts[:4], ["war", "war", "money", "war"]
        )
    with pytest.raises(InputError, match="Evaluation labels not seen in training: \\['art'\\]"):
        EFTClassifier(_multi_label_config(tiny_bert_dir)).fit(
            texts, labels, texts[:2], [["war", "art"], []]
        )
    clf = EFTClassifier(_multi_label_config(tiny_bert_dir, bp_epochs=0)).fit(texts, labels)
    with pytest.raises(InputError, match="scoring labels are one label per text"):
        clf.score(texts[:2], ["war", "money"])
    single = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    with pytest.raises(InputError, match="validation labels are label sets.*single-label"):
        EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(
            TEXTS, LABELS, TEXTS[:2], [["pos"], ["neg"]]
        )
    assert single.multi_label_ is False


def test_save_writes_the_recipe_the_model_was_fitted_with(tiny_bert_dir, tmp_path):
    """set_params after fit changes the next fit, not the fitted model, nor what it saves."""
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0, max_length=32, pooling="cls"))
    clf.fit(TEXTS, LABELS)
    expected = clf.predict_proba(TEXTS)
    clf.set_params(max_length=8, pooling="mean", method="bp", bp_epochs=1)
    np.testing.assert_array_equal(clf.predict_proba(TEXTS), expected)  # unchanged in memory
    loaded = EFTClassifier.from_pretrained(clf.save_pretrained(tmp_path / "m"), device="cpu")
    assert (loaded.config.max_length, loaded.config.pooling) == (32, "cls")
    assert loaded.config.method == "eft"
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), expected, rtol=1e-5, atol=1e-7)
    assert clf.config.pooling == "mean"  # the next fit's
    clf.set_params(eval_batch_size=0)  # checked before it is used, as by fit
    with pytest.raises(InputError, match="batch sizes must be >= 1"):
        clf.predict(TEXTS[:2])
    clf.save_pretrained(tmp_path / "m3")  # the fitted recipe, valid, is what a save writes
    with pytest.raises(InputError, match="batch sizes must be >= 1"):  # a refit that fails
        clf.fit(TEXTS, LABELS)
    assert not hasattr(clf, "classes_") and not hasattr(clf, "model_")  # leaves no fit
    loaded.set_params(max_length=8)  # so does a loaded model
    again = EFTClassifier.from_pretrained(loaded.save_pretrained(tmp_path / "m2"), device="cpu")
    assert again.config.max_length == 32


def test_array_shaped_texts_and_labels_read_as_scikit_learn_reads_them():
    """DataFrame[["text"]] / [["a", "b"]] .to_numpy(): a column of texts or of pairs; a
    column-vector y: one label per text (with scikit-learn's DataConversionWarning); lists
    of 0s and 1s: label sets, with a warning pointing at np.asarray for an indicator matrix."""
    from sklearn.exceptions import DataConversionWarning

    from eft.classifier import check_texts_and_labels

    texts, labels = check_texts_and_labels(np.array([["a b", "c"], ["d", "e f"]]), [0, 1])
    assert texts == [("a b", "c"), ("d", "e f")] and labels.tolist() == [0, 1]
    with pytest.warns(DataConversionWarning, match="column-vector"):
        texts, labels = check_texts_and_labels(np.array([["a"], ["b"]]), np.array([[0], [1]]))
    assert texts == ["a", "b"] and labels.ndim == 1 and labels.tolist() == [0, 1]
    with pytest.warns(UserWarning, match=r"pass np.asarray\(labels\)"):
        _, sets = check_texts_and_labels(["a", "b"], [[1, 0, 1], [0, 1, 0]])
    assert sets == [(1, 0), (0, 1)]
    with pytest.raises(InputError, match="2-D array of 3 columns"):
        check_texts_and_labels(np.array([["a", "b", "c"]]), [0])


def test_sample_weight_weighs_each_text_in_both_stages(tiny_bert_dir, monkeypatch):
    """fit(sample_weight=...): the BP loss scaled to mean-1 weights, the head's statistics
    by the weights themselves (Eq. 5-6 with W), as scikit-learn's Ridge counts them."""
    import eft.classifier

    n = len(TEXTS)
    ones, twos = np.ones(n), np.full(n, 2.0)

    def scores(weights=None, **overrides):
        clf = EFTClassifier(_config(tiny_bert_dir, **{"bp_epochs": 1, "C": 4.0, **overrides}))
        return clf.fit(TEXTS, LABELS, sample_weight=weights).decision_function(TEXTS)

    # weights of 1: the unweighted model (the loss sum_i w_i c_i l_i / sum_i c_i)
    balanced = scores(class_weight="balanced")
    np.testing.assert_allclose(scores(ones, class_weight="balanced"), balanced, atol=1e-5)
    # weights of 2: the same BP stage (mean 1), the head's data term doubled, as C doubled;
    # also half fused (the last epoch's batches carry their weights, the others are fed after)
    np.testing.assert_allclose(scores(twos), scores(C=8.0), atol=1e-4)
    fused = {"elm_from_last_epoch": True, "fused_fraction": 0.5}
    np.testing.assert_allclose(scores(twos, **fused), scores(C=8.0, **fused), atol=1e-4)
    # label sets: a sigmoid per label in the BP stage, weighted as one loss per text
    screen = ("film", "movie")
    label_sets = [
        [y, "screen"] if any(w in t for w in screen) else [y]
        for t, y in zip(TEXTS, LABELS, strict=True)
    ]

    def multi_label(weights=None, C=4.0):
        clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, C=C))
        return clf.fit(TEXTS, label_sets, sample_weight=weights).decision_function(TEXTS)

    np.testing.assert_allclose(multi_label(twos), multi_label(C=8.0), atol=1e-4)
    # a weight of 0 is no row for the head: a frozen encoder's head on the other rows
    kept = np.arange(n) % 3 != 0
    for standardize in (False, True):
        frozen = dict(bp_epochs=0, standardize=standardize)
        clf = EFTClassifier(_config(tiny_bert_dir, **frozen))
        weighted = clf.fit(TEXTS, LABELS, sample_weight=kept.astype(float))
        subset = EFTClassifier(_config(tiny_bert_dir, **frozen)).fit(
            [t for t, k in zip(TEXTS, kept, strict=True) if k],
            [y for y, k in zip(LABELS, kept, strict=True) if k],
        )
        np.testing.assert_allclose(
            weighted.decision_function(TEXTS), subset.decision_function(TEXTS), atol=1e-5
        )
    # fused with an unfed part: chunks whose weights are all 0 add nothing, wherever the
    # rows of positive weight fall (a chunk of zeros only was refused by partial_fit)
    for first in range(0, 16, 4):
        weights = np.zeros(n)
        weights[[first, first + 1, first + 8]] = 1.0
        config = _config(tiny_bert_dir, bp_epochs=1, batch_size=4, **fused)
        assert EFTClassifier(config).fit(TEXTS[:16], LABELS[:16], sample_weight=weights[:16])
    # the BP stage gets every text's weight, in row order (and scales them to mean 1)
    received = []
    train_backprop = eft.classifier.train_backprop

    def spy(*args, **kwargs):
        received.append(kwargs["sample_weight"])
        return train_backprop(*args, **kwargs)

    monkeypatch.setattr(eft.classifier, "train_backprop", spy)
    weights = np.linspace(1, 3, n)
    scores(weights)
    np.testing.assert_allclose(received[-1].numpy(), weights)
    for bad, message in (
        (np.ones(n - 1), "give one weight per text"),
        (-ones, "finite and non-negative"),
        (0 * ones, "zero for every text"),
        (["a"] * n, "must be numbers"),
    ):
        with pytest.raises(InputError, match=message):
            EFTClassifier(_config(tiny_bert_dir)).fit(TEXTS, LABELS, sample_weight=bad)
    with pytest.raises(InputError, match="contrastive loss .* has no per-text weights"):
        EFTClassifier(_config(tiny_bert_dir, contrastive_weight=0.5)).fit(
            TEXTS, LABELS, sample_weight=ones
        )
