"""Callbacks (eft.callbacks): what they see of the BP stage, stopping it, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eft import Callback, EFTClassifier, EpochLog, InputError
from tests.test_classifier import LABELS, TEXTS, _config


class Recorder(Callback):
    """Keeps every epoch's log and the encoder's weights; asks to stop after ``stop_after``."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.logs: list[EpochLog] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.begun: list[EFTClassifier] = []
        self.fitted: list[EFTClassifier] = []

    def on_fit_begin(self, classifier: EFTClassifier) -> None:
        assert not hasattr(classifier, "model_")  # not fitted yet
        self.begun.append(classifier)

    def on_epoch_end(self, log: EpochLog, model: torch.nn.Module) -> bool:
        self.logs.append(log)
        self.weights.append({k: v.clone() for k, v in model.encoder.state_dict().items()})
        return self.stop_after is not None and log.epoch >= self.stop_after

    def on_fit_end(self, classifier: EFTClassifier) -> None:
        self.fitted.append(classifier)


def test_callbacks_see_every_epoch_as_the_history_records_it(tiny_bert_dir):
    recorder = Recorder()
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=3))
    clf.fit(TEXTS, LABELS, TEXTS[:16], LABELS[:16], callbacks=[recorder])
    history = clf.history_
    assert [log.epoch for log in recorder.logs] == [1, 2, 3]
    assert {log.epochs for log in recorder.logs} == {3}
    assert [log.train_loss for log in recorder.logs] == history["bp_train_loss"]
    assert [log.validation_accuracy for log in recorder.logs] == history["bp_validation_accuracy"]
    assert [log.seconds for log in recorder.logs] == history["bp_epoch_seconds"]
    assert all(log.is_main_process for log in recorder.logs)
    assert history["bp_stopped_by_callback"] is False
    assert recorder.begun == recorder.fitted == [clf]  # once each
    assert hasattr(clf, "history_")
    # the model handed over is the one being trained: its last state is the fitted encoder's
    final = clf.model_.encoder.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in recorder.weights[-1].items())
    assert not all(torch.equal(v, final[k]) for k, v in recorder.weights[0].items())
    log = recorder.logs[0].to_dict()
    assert json.loads(json.dumps(log)) == log  # plain values, ready for a JSON log


def test_without_validation_data_the_log_has_no_accuracy(tiny_bert_dir):
    recorder = Recorder()
    EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(TEXTS, LABELS, callbacks=recorder)
    assert [log.validation_accuracy for log in recorder.logs] == [None]  # one callback, no list


def test_a_callback_stops_the_bp_stage_and_the_head_fits_that_encoder(tiny_bert_dir):
    recorder = Recorder(stop_after=1)
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=3))
    clf.fit(TEXTS, LABELS, callbacks=[recorder, Callback()])  # the base class does nothing
    assert len(recorder.logs) == 1 and len(clf.history_["bp_train_loss"]) == 1
    assert clf.history_["bp_stopped_by_callback"] is True
    final = clf.model_.encoder.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in recorder.weights[0].items())
    assert clf.head_.n_samples_seen_ == len(TEXTS)
    assert clf.timings_["feedforward"] > 0
    # asking after the last epoch stops nothing
    last = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1))
    last.fit(TEXTS, LABELS, callbacks=[Recorder(stop_after=1)])
    assert last.history_["bp_stopped_by_callback"] is False


def test_a_run_stopped_by_a_callback_resumes_as_stopped(tiny_bert_dir, tmp_path):
    """Its checkpoint after the stopped epoch is resumed (after an interruption in the feature
    pass, say) to the same model, without training the epochs the callback cancelled."""
    folder = tmp_path / "checkpoint"
    config = _config(tiny_bert_dir, bp_epochs=3, checkpoint_dir=str(folder))
    stopped = EFTClassifier(config).fit(TEXTS, LABELS, callbacks=[Recorder(stop_after=1)])
    recorder = Recorder()
    resumed = EFTClassifier(config).fit(TEXTS, LABELS, resume_from=folder, callbacks=[recorder])
    assert recorder.logs == [] and len(resumed.history_["bp_epoch_seconds"]) == 1
    assert resumed.history_["bp_stopped_by_callback"] is True
    np.testing.assert_allclose(
        resumed.decision_function(TEXTS), stopped.decision_function(TEXTS), rtol=1e-5, atol=1e-6
    )


def test_a_stop_in_fused_mode_falls_back_to_a_feature_pass(tiny_bert_dir):
    """Fused mode collects the head's statistics in the last epoch; stopped before it, eft
    passes the texts through the encoder instead, so the head still sees every text once."""
    config = _config(tiny_bert_dir, bp_epochs=2, elm_from_last_epoch=True)
    stopped = EFTClassifier(config).fit(TEXTS, LABELS, callbacks=[Recorder(stop_after=1)])
    assert stopped.history_["bp_stopped_by_callback"] is True
    assert stopped.head_.n_samples_seen_ == len(TEXTS)
    assert stopped.timings_["feedforward"] > 0
    assert set(stopped.predict(TEXTS)) <= {"neg", "pos"}
    watched = EFTClassifier(config).fit(TEXTS, LABELS, callbacks=[Recorder()])
    assert watched.timings_["feedforward"] == 0.0  # not stopped: fused as before
    assert watched.head_.n_samples_seen_ == len(TEXTS)


def test_the_baseline_stopped_by_a_callback_keeps_its_best_epoch(tiny_bert_dir):
    config = _config(tiny_bert_dir, method="bp", bp_epochs=4, early_stopping_patience=3)
    recorder = Recorder(stop_after=2)
    clf = EFTClassifier(config).fit(TEXTS, LABELS, TEXTS[:16], LABELS[:16], callbacks=[recorder])
    history = clf.history_
    assert len(history["bp_validation_accuracy"]) == 2 and history["bp_stopped_by_callback"]
    best = history["bp_best_epoch"]
    assert history["validation_accuracy"] == history["bp_validation_accuracy"][best - 1]
    kept = clf.model_.encoder.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in recorder.weights[best - 1].items())


def test_fit_stream_calls_the_callbacks(tiny_bert_dir, tmp_path):
    path = tmp_path / "train.jsonl"
    rows = zip(TEXTS, LABELS, strict=True)
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    recorder = Recorder(stop_after=1)
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=2))
    clf.fit_stream(str(path), callbacks=[recorder])
    assert [log.epoch for log in recorder.logs] == [1] and recorder.fitted == [clf]
    assert clf.head_.n_samples_seen_ == len(TEXTS)


def test_a_callback_that_raises_stops_the_fit_with_its_error(tiny_bert_dir):
    class Boom(Callback):
        def on_epoch_end(self, log, model):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        EFTClassifier(_config(tiny_bert_dir, bp_epochs=1)).fit(TEXTS, LABELS, callbacks=[Boom()])


@pytest.mark.parametrize(
    "bad,message",
    [
        ([object()], "is not a callback: it has none of on_fit_begin"),
        ([print], "is not a callback"),
        ("on_epoch_end", "callbacks must be a list of eft.Callback objects, got str"),
        (3, "got int"),
        ([Recorder], r"the class Recorder; pass an instance of it: Recorder\(\)"),
        (Recorder, r"the class Recorder; pass an instance"),
    ],
)
def test_what_is_not_a_callback_is_refused_before_training(tiny_bert_dir, bad, message):
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1))
    with pytest.raises(InputError, match=message):
        clf.fit(TEXTS, LABELS, callbacks=bad)
    assert not hasattr(clf, "model_")


def test_the_base_class_methods_do_nothing():
    log = EpochLog(epoch=1, epochs=2, train_loss=0.5, validation_accuracy=None, seconds=1.0)
    assert Callback().on_fit_begin(None) is None
    assert Callback().on_epoch_end(log, None) is None
    assert Callback().on_fit_end(None) is None
    assert np.isclose(log.to_dict()["train_loss"], 0.5)


def test_grid_search_passes_one_callback_to_every_fit(tiny_bert_dir):
    from sklearn.model_selection import GridSearchCV

    recorder = Recorder()
    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1))
    GridSearchCV(clf, {"C": [0.1, 10.0]}, cv=2).fit(TEXTS, LABELS, callbacks=[recorder])
    assert len(recorder.begun) == len(recorder.fitted) == 2 * 2 + 1  # 2 x 2 folds, then refit
    assert len(recorder.logs) == 5 and {log.epoch for log in recorder.logs} == {1}
