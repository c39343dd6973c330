"""Callbacks: watch the BP stage epoch by epoch, stop it early, see the fitted model.

Pass them to :meth:`eft.EFTClassifier.fit` (or ``fit_stream``) as ``callbacks=[...]``. A
callback is an instance of :class:`Callback` or any object with some of its methods:

- ``on_fit_begin(classifier)`` when the checked inputs are about to be trained on (e.g. to
  start a clock: one callback object may serve several fits, as ``GridSearchCV`` makes).
- ``on_epoch_end(log, model)`` after every BP epoch (Algorithm 1, steps 1-5), with the
  epoch's :class:`EpochLog` and the encoder with its linear head (a ``torch.nn.Module``, for
  logging or saving; leave its weights alone). Returning True stops the BP stage after this
  epoch: EFT then fits the I-ELM head on the encoder as it is (in fused mode with a feature
  pass, as the last epoch's features were not collected), and the baseline
  (``method="bp"``) keeps its best epoch with early stopping (else its last). The learning
  rate is not decayed further: a stopped run is not a run with fewer ``bp_epochs``.
- ``on_fit_end(classifier)`` once the model is fitted (``history_``, ``timings_`` are set).

With several processes (``torchrun``, ``accelerate launch``) every process calls its
callbacks (``log.is_main_process`` says which is the main one, e.g. to write a log once),
and the BP stage stops when a callback on any of them asks. A callback that raises stops
the fit with its error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from eft.errors import InputError

_METHODS = ("on_fit_begin", "on_epoch_end", "on_fit_end")


@dataclass(frozen=True)
class EpochLog:
    """One BP epoch: its number (from 1) of ``epochs`` planned, the mean training loss, the
    validation accuracy of the linear head (None without validation data; subset accuracy
    for multi-label data) and the epoch's seconds (without the validation pass)."""

    epoch: int
    epochs: int
    train_loss: float
    validation_accuracy: float | None
    seconds: float
    is_main_process: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Callback:
    """Base class of a callback; override the methods you need (they do nothing here)."""

    def on_fit_begin(self, classifier: Any) -> None:
        """Before the BP stage, with the :class:`~eft.EFTClassifier` being fitted."""

    def on_epoch_end(self, log: EpochLog, model: Any) -> bool | None:
        """After BP epoch ``log.epoch``; return True to stop the BP stage now."""
        return None

    def on_fit_end(self, classifier: Any) -> None:
        """After the fit, with the fitted :class:`~eft.EFTClassifier`."""


def check_callbacks(callbacks: Sequence[Any] | None) -> list[Any]:
    """The callbacks as a list; refuses what has none of :class:`Callback`'s methods."""
    if callbacks is None:
        return []
    if isinstance(callbacks, type) or _has_a_method(callbacks):  # one, not in a list
        callbacks = [callbacks]
    elif not isinstance(callbacks, (list, tuple)):
        raise InputError(
            f"callbacks must be a list of eft.Callback objects, got {type(callbacks).__name__}."
        )
    for callback in callbacks:
        if isinstance(callback, type):
            raise InputError(
                f"callbacks hold the class {callback.__name__}; pass an instance of it: "
                f"{callback.__name__}()."
            )
        if not _has_a_method(callback):
            raise InputError(
                f"{callback!r} is not a callback: it has none of on_fit_begin(classifier), "
                "on_epoch_end(log, model), on_fit_end(classifier). Subclass eft.Callback and "
                "override what you need."
            )
    return list(callbacks)


def _has_a_method(callback: Any) -> bool:
    return any(callable(getattr(callback, name, None)) for name in _METHODS)


def epoch_end(callbacks: Sequence[Any], log: EpochLog, model: Any) -> bool:
    """Calls every callback's ``on_epoch_end`` (all of them, even after one asks to stop);
    True if any asked to stop."""
    stop = False
    for callback in callbacks:
        method = getattr(callback, "on_epoch_end", None)
        if callable(method) and method(log, model):
            stop = True
    return stop


def fit_begin(callbacks: Sequence[Any], classifier: Any) -> None:
    _call(callbacks, "on_fit_begin", classifier)


def fit_end(callbacks: Sequence[Any], classifier: Any) -> None:
    _call(callbacks, "on_fit_end", classifier)


def _call(callbacks: Sequence[Any], name: str, classifier: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, name, None)
        if callable(method):
            method(classifier)
