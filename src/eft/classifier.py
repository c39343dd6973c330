"""``EFTClassifier``: Extreme Fine-Tuning end to end (paper Algorithm 1), saved and loaded.

Stages and the timings they report (paper Appendix F):

* ``bp`` - steps 1-5: backprop with a linear head for ``bp_epochs`` epochs;
* ``feedforward`` - steps 6-7: one eval-mode pass of the training texts through the encoder;
* ``elm`` - steps 8-9: hidden layer, ``Lambda``, ``Gamma`` and the closed-form solve;
* ``total`` - the whole ``fit`` after the model is loaded (tokenising and evaluation included;
  a fit resumed from a checkpoint adds the earlier processes' BP epochs and validation passes,
  as ``bp`` counts them, but not the time lost to the interruption).

``train`` is ``bp + feedforward + elm``, the paper's training time (TTM).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.metadata_routing import UNUSED

from eft.atomic import (
    atomic_dir,
    check_file_digests,
    check_writable,
    file_digests,
    interrupted_save_hint,
    json_default,
)
from eft.backprop import EncoderWithLinearHead, train_backprop
from eft.calibration import (
    binary_negative_log_likelihood,
    fit_label_thresholds,
    fit_temperature,
    negative_log_likelihood,
)
from eft.callbacks import check_callbacks, epoch_end, fit_begin, fit_end
from eft.config import EFTConfig
from eft.encoder import (
    TextEncoder,
    check_model_dir,
    check_model_for_training,
    check_room_for_text,
    extract_features,
    is_text_pair,
    load_backbone,
    model_max_length,
    quiet_transformers,
    tokenize,
)
from eft.errors import InputError, NotFittedInputError
from eft.ielm import IELMClassifier, softmax_keeping_argmax
from eft.metrics import is_label_set
from eft.modeling import EFTModel
from eft.provenance import cpu_instruction_set

MODEL_FORMAT = "eft-model"
MODEL_FORMAT_VERSION = 1
CONFIG_FILE = "eft_config.json"
ELM_HEAD_FILE = "elm_head.safetensors"
LINEAR_HEAD_FILE = "linear_head.safetensors"


def check_texts_and_labels(
    texts: Sequence[Any], labels: Any, what: str = "training"
) -> tuple[list[Any], Labels | None]:
    """Texts must be non-empty strings, or all ``(text, text_pair)`` pairs of them; labels one
    per text: all ints or all strings, or, for multi-label data, a label set per text (see
    :func:`encode_labels`)."""
    if isinstance(texts, (str, bytes)):  # else one text becomes a list of characters
        raise InputError(
            f"The {what} texts must be a list of strings, not one string: pass [text]."
        )
    if getattr(texts, "ndim", 1) == 2:  # DataFrame[[...]].to_numpy(): a column or two
        columns = texts.shape[1]
        if columns not in (1, 2):
            raise InputError(
                f"The {what} texts are a 2-D array of {columns} columns; give one column of "
                "texts, or two of text pairs (text, text_pair)."
            )
        rows = np.asarray(texts, dtype=object).tolist()  # an array, or a DataFrame
        texts = [row[0] if columns == 1 else tuple(row) for row in rows]
    texts = list(texts)
    if not texts:
        raise InputError(f"No {what} texts were given.")
    if is_text_pair(texts[0]):
        texts = [tuple(t) if is_text_pair(t) else t for t in texts]
        bad = [
            i for i, t in enumerate(texts) if not is_text_pair(t) or not all(p.strip() for p in t)
        ]
        if bad:
            raise InputError(
                f"{len(bad)} {what} text pair(s) are not two non-empty strings (first at index "
                f"{bad[0]}, counting from 0; the first is a pair, so every row must be one); "
                "drop or fill them."
            )
        return _checked_labels(texts, labels, what)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise InputError(
            f"{len(bad)} {what} text(s) are empty or not strings (first at index {bad[0]}, "
            f"counting from 0); drop or fill them."
        )
    return _checked_labels(texts, labels, what)


def _checked_sample_weight(sample_weight: Any, n_texts: int) -> np.ndarray | None:
    """``fit``'s ``sample_weight`` as float64, one finite non-negative weight per text, not all
    zero; None stays None."""
    if sample_weight is None:
        return None
    if hasattr(sample_weight, "cpu"):  # a tensor
        sample_weight = sample_weight.detach().cpu().numpy()
    try:
        weights = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"sample_weight must be numbers, one per text: {error}") from error
    if weights.ndim != 1 or len(weights) != n_texts:
        raise InputError(
            f"sample_weight has shape {weights.shape}; give one weight per text ({n_texts})."
        )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise InputError("sample_weight must be finite and non-negative.")
    if not weights.any():
        raise InputError("sample_weight is zero for every text; at least one must be positive.")
    return weights


#: Checked labels: a 1-D array (one label per text), a 2-D 0/1 indicator matrix, or a list of
#: label tuples (multi-label).
Labels = np.ndarray | list[tuple[Any, ...]]


def _checked_labels(texts: list[Any], labels: Any, what: str) -> tuple[list[Any], Labels | None]:
    if labels is None:
        return texts, None
    if getattr(labels, "ndim", 1) == 2:  # an array or tensor of rows
        labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    if getattr(labels, "ndim", 1) == 2 and labels.shape[1] == 1:  # a column, as sklearn
        warnings.warn(
            f"A column-vector of {what} labels was passed where a 1-D array was expected; "
            "it is read as one label per text (ravel() it to silence this).",
            DataConversionWarning,
            stacklevel=4,
        )
        labels = labels.ravel()
    if getattr(labels, "ndim", 1) == 2:  # a 0/1 indicator matrix, one column per label
        matrix = labels
        if len(matrix) != len(texts):
            raise InputError(f"{len(texts)} {what} texts but {len(matrix)} label rows.")
        if not np.isin(matrix, (0, 1)).all():
            raise InputError(
                f"A 2-D array of {what} labels is read as a multi-label indicator matrix (a "
                f"column per label) and must hold only 0 and 1."
            )
        return texts, matrix.astype(np.int64)
    labels = list(labels.tolist() if hasattr(labels, "tolist") else labels)
    if len(labels) != len(texts):
        raise InputError(f"{len(texts)} {what} texts but {len(labels)} labels.")
    if any(is_label_set(label) for label in labels):
        single = [i for i, label in enumerate(labels) if not is_label_set(label)]
        if single:
            raise InputError(
                f"The {what} labels mix label sets (multi-label) with single labels, first at "
                f"index {single[0]} (counting from 0); give every row a list of its labels "
                "([] for none)."
            )
        if (
            len({len(label) for label in labels}) == 1
            and len(labels[0]) > 1
            and all(
                isinstance(v, (int, np.integer)) and v in (0, 1) for label in labels for v in label
            )
        ):  # scikit-learn reads these rows as an indicator matrix
            warnings.warn(
                f"The {what} labels are lists of 0s and 1s of one length; they are read as "
                "label sets (the row [1, 0, 1] is the labels {0, 1}). For a 0/1 indicator "
                "matrix, one column per label, pass np.asarray(labels).",
                UserWarning,
                stacklevel=4,
            )
        sets = [
            tuple(dict.fromkeys(label.tolist() if isinstance(label, np.ndarray) else label))
            for label in labels
        ]
        _check_label_types([v for labels_of_row in sets for v in labels_of_row], what)
        return texts, sets
    if any(label is None or (isinstance(label, float) and np.isnan(label)) for label in labels):
        raise InputError(f"Some {what} labels are missing.")
    _check_label_types(labels, what)
    return texts, np.asarray(labels)


def _check_label_types(labels: list[Any], what: str) -> None:
    kinds = {
        "int"
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        else "str"
        if isinstance(v, str)
        else type(v).__name__
        for v in labels
    }
    if len(kinds) > 1 or not kinds <= {"int", "str"}:
        raise InputError(
            f"{what.capitalize()} labels must be all integers or all strings; got "
            f"{', '.join(sorted(kinds))}."
        )


def encode_labels(
    labels: Labels, classes: np.ndarray | None = None, what: str = "training"
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, targets)`` of checked labels: the sorted label names and each text's class
    index, or for multi-label data a 0/1 indicator matrix (n, n_classes).

    Multi-label data are label sets (``[["sports", "politics"], ["science"], []]``, the input of
    scikit-learn's ``MultiLabelBinarizer``) or a 2-D 0/1 array whose columns are the labels
    (``classes`` 0 .. L-1). With ``classes`` (the training labels), ``labels`` are mapped onto
    them; labels not among them raise.
    """
    if isinstance(labels, np.ndarray) and labels.ndim == 1:
        if classes is None:
            return np.unique(labels, return_inverse=True)
        _refuse_unknown(set(labels.tolist()), classes, what)
        return classes, np.searchsorted(classes, labels)
    if isinstance(labels, np.ndarray):  # indicator matrix
        if classes is not None and labels.shape[1] != len(classes):
            raise InputError(
                f"The {what} label matrix has {labels.shape[1]} columns; the model has "
                f"{len(classes)} labels."
            )
        return (np.arange(labels.shape[1]) if classes is None else classes), labels
    values = [v for row in labels for v in row]
    if classes is None:
        classes = np.unique(np.asarray(values))
    else:
        _refuse_unknown(set(values), classes, what)
    column = {c: i for i, c in enumerate(classes.tolist())}
    targets = np.zeros((len(labels), len(classes)), dtype=np.int64)
    for row, labels_of_row in enumerate(labels):
        targets[row, [column[v] for v in labels_of_row]] = 1
    return classes, targets


def _refuse_unknown(seen: set[Any], classes: np.ndarray, what: str) -> None:
    unknown = sorted(seen - set(classes.tolist()), key=str)
    if unknown:
        raise InputError(
            f"{what.capitalize()} labels not seen in training: {unknown[:10]}; the model can "
            f"only predict {classes.tolist()[:20]}."
        )


def _resolve_precision(precision: str, on_cuda: bool) -> str:
    """ "auto" is bf16 on a CUDA GPU that supports it and no (float32) elsewhere."""
    if precision != "auto":
        return precision
    return "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "no"


def _warn_if_emulated_bf16(precision: str, device_type: str) -> None:
    """bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) runs in emulation."""
    if precision != "bf16" or device_type != "cpu":
        return
    if cpu_instruction_set()["native_bf16"] is False:
        warnings.warn(
            "bf16 on this CPU (no AVX512-BF16 or AMX) is emulated and slow: on a 2-core AVX2 "
            "host the feature pass took 6.4x as long as in float32 "
            "(benchmarks/results/bf16_pass_trec_1000_avx2_host.md). Use mixed_precision / "
            "inference_precision 'no' (--mixed-precision no, --inference-precision no) here.",
            RuntimeWarning,
            stacklevel=3,
        )


def _accelerator(config: EFTConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda"):
        _select_cuda_device(device)
    precision = _resolve_precision(config.mixed_precision, device.startswith("cuda"))
    _warn_if_emulated_bf16(precision, "cpu" if device == "cpu" else "cuda")
    # accelerate keeps one process-wide state, which refuses another device or precision; one
    # process may train several models, or load on the CPU a model it trained on a GPU.
    current = PartialState._shared_state.get("device")
    if current is not None and (current.type == "cpu") != (device == "cpu"):
        AcceleratorState._reset_state(reset_partial_state=True)
    elif AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state()
    return Accelerator(cpu=device == "cpu", mixed_precision=precision)


def _select_cuda_device(device: str) -> None:
    """Check that the GPU asked for exists; make ``cuda:N`` the current device.

    accelerate puts a single process on the current GPU (``torch.device("cuda")``) and each
    process of a distributed launch on its local rank's, so ``cuda:N`` is honoured by making GPU
    N current, and is refused under a launcher. Without this, accelerate silently fell back to
    the CPU when no GPU was visible, and ran ``cuda:1`` on GPU 0.
    """
    if not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} was asked for, but torch {torch.__version__} sees no CUDA GPU "
            f"(built with CUDA: {torch.version.cuda or 'no'}). Use device 'cpu' or 'auto' "
            "(--device), or install a CUDA build of torch (make install TORCH_SPEC=torch)."
        )
    if device == "cuda":
        return
    index = int(device.split(":")[1])
    if index >= torch.cuda.device_count():
        raise InputError(
            f"device {device!r}: torch sees {torch.cuda.device_count()} GPU(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}."
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError(
            f"device {device!r} under a distributed launch: each process takes its local "
            "rank's GPU; use device 'cuda' and choose the GPUs with CUDA_VISIBLE_DEVICES."
        )
    torch.cuda.set_device(index)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _defers_host_checks(device: torch.device) -> bool:
    """On an accelerator, per-batch checks and timers stay on the device and are read once
    at the end of a pass: no host round-trip per batch."""
    return device.type != "cpu"


class _PhaseTimer:
    """Seconds spent inside ``with timer:`` blocks: the host clock on a CPU; CUDA events on
    a GPU, read once by :meth:`seconds` (one synchronisation, not one per block)."""

    def __init__(self, device: torch.device) -> None:
        self.events = device.type == "cuda" and _defers_host_checks(device)
        self.host_seconds = 0.0
        self.pairs: list[list[Any]] = []

    def __enter__(self) -> _PhaseTimer:
        if self.events:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self.pairs.append([start, None])
        else:
            self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.events:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.pairs[-1][1] = end
        else:
            self.host_seconds += time.perf_counter() - self._start

    def seconds(self) -> float:
        if not self.pairs:
            return self.host_seconds
        torch.cuda.synchronize()
        return self.host_seconds + sum(a.elapsed_time(b) for a, b in self.pairs) / 1000.0


class _FiniteCheck:
    """NaN/inf check of the encoder's features: per batch on a CPU; on an accelerator a
    device-side flag, read once by :meth:`finish` at the end of the pass."""

    def __init__(self, device: torch.device, config: EFTConfig) -> None:
        self.defer = _defers_host_checks(device)
        self.config = config
        self.flag: torch.Tensor | None = None

    def __call__(self, features: torch.Tensor) -> None:
        if not self.defer:
            _check_finite(features, self.config)
            return
        finite = torch.isfinite(features.sum())
        self.flag = finite if self.flag is None else self.flag & finite

    def finish(self) -> None:
        flag, self.flag = self.flag, None
        if flag is not None and not bool(flag):
            _raise_non_finite("some", self.config)


class _HeadFeeder:
    """Adds ``(features, label indices)`` batches to an I-ELM head by ``partial_fit``, joined
    into chunks of ``head.batch_size`` rows: one rank-32 update reads and writes all of Gamma,
    so per-step updates of a large head are memory-bound (4,907 rows into nh 4000 on this
    CPU: 3.15 s in batches of 32 rows, 1.81 s joined; bench_ielm.md, part d). Call
    :meth:`flush` after the last batch."""

    def __init__(self, head: IELMClassifier, n_classes: int, check_input: bool) -> None:
        self.head, self.n_classes, self.check_input = head, n_classes, check_input
        self.pending: list[tuple[torch.Tensor, torch.Tensor, Any]] = []
        self.rows = 0

    def add(self, features: torch.Tensor, labels: torch.Tensor, weights: Any = None) -> None:
        """A batch, with its sample weights (a tensor or array) or None."""
        # copies: pooled features may be a view that keeps a whole batch's hidden states alive
        self.pending.append((features.clone(), labels.clone(), weights))
        self.rows += features.shape[0]
        if self.rows >= self.head.batch_size:
            self.flush(last=False)

    def flush(self, last: bool = True) -> None:
        """Add the pending batches (all of them with ``last``). Rows of weight 0 add nothing:
        a chunk of them only is dropped once the head has started, and kept until a row of
        positive weight joins it before (the first chunk starts the head)."""
        if not self.pending:
            return
        weights = None
        if self.pending[0][2] is not None:  # on the host: partial_fit checks them there
            weights = np.concatenate([np.asarray(_as_host(w)) for _, _, w in self.pending])
            if not weights.any():
                if hasattr(self.head, "gamma_"):  # started: the chunk adds nothing
                    self.pending, self.rows = [], 0
                    return
                if not last:  # kept until a positive weight joins it
                    return
        features = torch.cat([f for f, _, _ in self.pending])
        labels = torch.cat([y for _, y, _ in self.pending])
        self.pending, self.rows = [], 0
        self.head.partial_fit(
            features,
            labels,
            classes=np.arange(self.n_classes),
            sample_weight=weights,
            check_input=self.check_input,
        )


def _as_host(values: Any) -> Any:
    """A tensor's values on the host (numpy), other values as they are."""
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values


class _FlopCounter:
    """FLOPs per phase with torch's FlopCounterMode, or nothing when disabled (Table 7)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.counts: dict[str, int] = {}
        self._excluded = 0  # inside the current phase

    @contextlib.contextmanager
    def phase(self, name: str, split: dict[str, str] | None = None) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        from torch.utils.flop_counter import FlopCounterMode

        self._excluded = 0
        with FlopCounterMode(display=False) as counter:
            yield
        total = int(counter.get_total_flops()) - self._excluded
        if split:  # e.g. {"bp_classifier": "EncoderWithLinearHead.classifier"}
            by_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
            rest = total
            for key, module in split.items():
                self.counts[key] = self.counts.get(key, 0) + int(by_module.get(module, 0))
                rest -= int(by_module.get(module, 0))
            self.counts[name] = self.counts.get(name, 0) + rest
        else:
            self.counts[name] = self.counts.get(name, 0) + total

    def add(self, name: str, flops: float) -> None:
        if self.enabled:
            self.counts[name] = self.counts.get(name, 0) + int(flops)

    @contextlib.contextmanager
    def excluded(self, name: str | None = None) -> Iterator[None]:
        """Work inside a phase that is not the phase's: counted under ``name`` (or not at
        all, where it is counted otherwise), as the timings leave validation out of "bp"."""
        if not self.enabled:
            yield
            return
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:  # the phase's counter sees it too
            yield
        flops = int(counter.get_total_flops())
        self._excluded += flops
        if name is not None:
            self.add(name, flops)


class EFTClassifier(ClassifierMixin, BaseEstimator):
    """Extreme Fine-Tuning text classifier.

    >>> clf = EFTClassifier(EFTConfig(bp_epochs=1, n_hidden=1000))   # doctest: +SKIP
    >>> clf.fit(train_texts, train_labels).predict(["a new text"])   # doctest: +SKIP

    A scikit-learn estimator: ``clone``, ``cross_val_score`` and ``GridSearchCV`` work. Its
    one constructor parameter is ``config``; every :class:`EFTConfig` field can also be read
    and set by name (``get_params()["n_hidden"]``, ``set_params(n_hidden=500)``, a grid over
    ``"C"``). A grid refits the encoder for every candidate: ``eft tune`` (:func:`eft.tuning.tune`)
    chooses k, ``n_hidden`` and ``C`` from one fine-tuning run instead.

    Fitted attributes: ``classes_`` (label names), ``model_`` (:class:`EFTModel`),
    ``tokenizer_``, ``head_`` (the :class:`IELMClassifier`, None for ``method="bp"``),
    ``timings_`` (seconds per phase), ``flops_`` (with ``flops=True``), ``history_`` (per BP
    epoch: loss, seconds and, with validation data, the linear head's accuracy; then the
    trained model's ``validation_accuracy`` and ``calibration``), ``n_train_`` (training
    rows), ``temperature_`` (the softmax temperature of :meth:`predict_proba`, fitted on the
    validation data for ``method="eft"``; 1 without validation data and for ``method="bp"``),
    ``text_pairs_`` and ``multi_label_`` (the kind of texts and of labels it was trained on),
    ``label_separator_`` (a multi-label model read from a file: the separator of its label
    cells, which ``eft evaluate`` reads test files with; else None).

    Multi-label data (a set of labels per text, none, one or several) are given as label sets
    or a 0/1 matrix (:func:`encode_labels`): the BP stage trains a sigmoid per label (binary
    cross-entropy), the I-ELM solves onto the 0/1 rows (Eq. 5-6 with indicator targets),
    :meth:`predict` returns the 0/1 matrix of the labels whose probability is above 0.5, and
    accuracies (``score``, the history's validation scores) are subset accuracies.
    """

    # texts and labels are scikit-learn's X and y, not metadata to route (its names are X, y)
    __metadata_request__fit = {"texts": UNUSED, "labels": UNUSED}
    __metadata_request__score = {"texts": UNUSED, "labels": UNUSED}
    __metadata_request__predict = {"texts": UNUSED}
    __metadata_request__predict_proba = {"texts": UNUSED}
    __metadata_request__decision_function = {"texts": UNUSED}

    def __init__(self, config: EFTConfig | None = None, **overrides: Any) -> None:
        self.set_params(config=config or EFTConfig(), **overrides)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """``{"config": ...}``; with ``deep`` also every EFTConfig field by name
        (``learning_rate`` None while it is the method's default, so that
        ``set_params(**get_params())`` keeps it following the method)."""
        params: dict[str, Any] = {"config": self.config}
        if deep:
            params.update(self.config.to_dict())
            if getattr(self.config, "_default_learning_rate", False):
                params["learning_rate"] = None  # the method's default, which follows it
        return params

    def set_params(self, **params: Any) -> EFTClassifier:
        """Replace ``config`` and/or change EFTConfig fields by name (a new config; the old
        one is not modified, so clones never share changes). As in scikit-learn, the values
        are checked by :meth:`fit` (names here): ``GridSearchCV`` gives an invalid
        combination its ``error_score`` and goes on."""
        config = params.pop("config") if "config" in params else self.config
        if params:  # a default learning rate follows a changed method
            config = config.replace(checked=False, **params)
        self.config = config
        return self

    def __sklearn_tags__(self):
        """Texts in (as scikit-learn's text vectorizers take them), one label or a label set
        per text out."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.classifier_tags.multi_label = True
        tags.target_tags.two_d_labels = True  # a 0/1 indicator matrix
        return tags

    def __repr__(self) -> str:
        c = self.config
        fitted = f", classes={len(self.classes_)}" if hasattr(self, "classes_") else ""
        return (
            f"EFTClassifier(model={c.model or 'all-MiniLM-L6-v2'!r}, method={c.method!r}, "
            f"bp_epochs={c.bp_epochs}, n_hidden={c.n_hidden}, C={c.C}{fitted})"
        )

    # -- training -------------------------------------------------------------------------------

    def fit(
        self,
        texts: Sequence[Any],
        labels: Sequence[Any],
        eval_texts: Sequence[Any] | None = None,
        eval_labels: Sequence[Any] | None = None,
        resume_from: str | os.PathLike | None = None,
        checkpoint_metadata: dict[str, Any] | None = None,
        callbacks: Sequence[Any] | None = None,
        sample_weight: Any = None,
    ) -> EFTClassifier:
        """Run the BP stage, the feedforward pass and the I-ELM solve (or the baseline).

        ``texts`` are strings or, for sentence-pair tasks (NLI, paraphrase), ``(text,
        text_pair)`` tuples, encoded as ``tokenizer(text, text_pair)`` encodes them; the fitted
        model then takes pairs (``text_pairs_``). ``labels`` are one label per text or, for
        multi-label tasks, a list of labels per text or a 0/1 matrix (``multi_label_``).
        ``resume_from`` continues from a checkpoint written to ``config.checkpoint_dir`` by an
        interrupted run with the same configuration and data. ``callbacks`` see every BP epoch
        and may stop the BP stage early (:mod:`eft.callbacks`).

        ``sample_weight`` (one non-negative number per text) weighs each text in both stages:
        its loss in the BP stage (the weights scaled to mean 1, so the step size stays) and
        its row of the I-ELM statistics, ``Gamma = H^T W H``, ``Lambda = T^T W H`` (Eq. 5-6;
        as scikit-learn's ``Ridge``, a weight of 2 counts a text twice against ``1/C``).
        Validation scores, calibration and ``class_weight="balanced"``'s counts are unweighted.
        """
        self._forget_fit()  # a refit that fails leaves nothing of the last fit
        self.config.validate()  # set_params leaves it to fit, as scikit-learn does
        texts, labels = check_texts_and_labels(texts, labels)
        classes, targets = encode_labels(labels)
        if targets.ndim == 2:
            counts = targets.sum(0)
        else:
            counts = np.bincount(targets, minlength=len(classes))
        data = _TextsInMemory(texts, targets, _checked_sample_weight(sample_weight, len(texts)))
        if data.sample_weight is not None and self.config.contrastive_weight:
            raise InputError(
                "sample_weight weighs the cross-entropy of the BP stage; the supervised "
                "contrastive loss (contrastive_weight) has no per-text weights. Drop one."
            )
        self._fit(
            data,
            classes,
            counts,
            eval_texts,
            eval_labels,
            resume_from,
            checkpoint_metadata,
            callbacks,
        )
        self.label_separator_ = None  # label sets given as they are
        return self

    def fit_stream(
        self,
        train: Any,
        eval_texts: Sequence[Any] | None = None,
        eval_labels: Sequence[Any] | None = None,
        *,
        text_column: str = "text",
        label_column: str = "label",
        bad_rows: str = "error",
        chunk_rows: int = 50_000,
        resume_from: str | os.PathLike | None = None,
        checkpoint_metadata: dict[str, Any] | None = None,
        text_pair_column: str | None = None,
        callbacks: Sequence[Any] | None = None,
        label_separator: str | None = None,
    ) -> EFTClassifier:
        """Like :meth:`fit`, from a training set read as a stream (larger than memory).

        ``train`` is a ``.csv``/``.tsv``/``.jsonl`` path (``.gz`` too), or a re-iterable of
        ``(text, label)`` rows or dicts (e.g. a streaming ``datasets.IterableDataset``); see
        :mod:`eft.streaming`. ``text_pair_column`` makes each text the pair of that column and
        ``text_column`` (sentence-pair tasks); tuple rows may hold pairs as they are.
        Multi-label data: rows whose labels are lists of labels, or a file read with
        ``label_separator`` (its JSON lists, or cells split on the separator). At most
        ``chunk_rows`` texts and their token ids are in memory; the BP stage shuffles within
        chunks. The validation data (``eval_texts``) is held in memory. Timings include
        tokenising, done on the fly.
        """
        from eft.streaming import as_row_stream, scan_rows

        self._forget_fit()  # a refit that fails leaves nothing of the last fit
        self.config.validate()  # set_params leaves it to fit, as scikit-learn does
        if int(chunk_rows) != chunk_rows or chunk_rows < 1:
            raise InputError(f"chunk_rows must be a positive integer, got {chunk_rows}")
        rows = as_row_stream(
            train, text_column, label_column, bad_rows, text_pair_column, label_separator
        )
        summary = scan_rows(rows)
        data = _TextStream(rows, summary.n_rows, summary.classes, int(chunk_rows))
        data.text_pairs, data.multi_label = summary.text_pairs, summary.multi_label
        self._fit(
            data,
            summary.classes,
            summary.counts,
            eval_texts,
            eval_labels,
            resume_from,
            checkpoint_metadata,
            callbacks,
        )
        self.label_separator_ = label_separator if self.multi_label_ else None
        return self

    def _fit(
        self,
        data: _TextsInMemory | _TextStream,
        classes: np.ndarray,
        counts: np.ndarray,
        eval_texts: Sequence[Any] | None,
        eval_labels: Sequence[Any] | None,
        resume_from: str | os.PathLike | None,
        checkpoint_metadata: dict[str, Any] | None,
        callbacks: Sequence[Any] | None = None,
    ) -> EFTClassifier:
        cfg = self.config
        callbacks = check_callbacks(callbacks)
        multi_label = data.multi_label
        if len(classes) < 2:
            held = f"a single class ({classes.tolist()[0]!r})" if len(classes) else "no label"
            raise InputError(f"The training labels hold {held}; a classifier needs at least 2.")
        if multi_label:
            _check_multi_label_config(cfg)
        elif cfg.tune_thresholds:
            raise InputError(
                "tune_thresholds chooses each label's threshold of a multi-label model; these "
                "labels are one per text, whose prediction is the top-scoring class. Drop it."
            )
        if cfg.tune_thresholds and eval_texts is None:
            raise InputError(
                "tune_thresholds chooses the thresholds on validation data: pass "
                "eval_texts/eval_labels (--validation FILE), or drop it."
            )
        if (eval_texts is None) != (eval_labels is None):
            raise InputError(
                "eval_texts and eval_labels go together: pass both (validation texts and their "
                "labels) or neither."
            )
        eval_targets = None
        if eval_texts is not None:
            eval_texts, eval_labels = check_texts_and_labels(eval_texts, eval_labels, "evaluation")
            if is_text_pair(eval_texts[0]) != data.text_pairs:
                raise InputError(
                    "The training and validation data must both be text pairs or both single "
                    f"texts; the training data holds {_kind(data.text_pairs)} and the "
                    f"validation data {_kind(not data.text_pairs)}."
                )
            check_label_form(eval_labels, multi_label, "validation")
            _, eval_targets = encode_labels(eval_labels, classes, "evaluation")
        if cfg.method == "eft" and cfg.early_stopping_patience is not None:
            raise InputError(
                "early_stopping_patience stops standard fine-tuning (method='bp', --method bp); "
                "EFT trains its bp_epochs and fits its head. Drop the patience, or stop the BP "
                "stage from a callback."
            )
        if cfg.method == "bp" and cfg.early_stopping_patience and eval_texts is None:
            raise InputError(
                "Early stopping (early_stopping_patience) needs validation data: pass "
                "eval_texts/eval_labels (--validation FILE), or drop the patience."
            )
        if cfg.elm_from_last_epoch and cfg.n_iter > 1:
            raise InputError(
                "Fused mode (elm_from_last_epoch) makes no separate feature pass, but n_iter > 1 "
                "needs one per iteration; use n_iter=1 or turn fused mode off."
            )
        if cfg.elm_from_last_epoch and cfg.fused_fraction < 1 and not data.cacheable:
            raise InputError(
                "fused_fraction < 1 passes the texts of the last epoch's first steps again, which "
                "needs the training data in memory; with a streamed training set use "
                "fused_fraction=1 (fully fused) or turn fused mode off."
            )
        data.digest = None  # the data's fingerprint, for checkpoints only (all texts hashed)
        if cfg.checkpoint_dir or resume_from is not None:  # kept there, checked on resume
            data.digest = data.fingerprint(counts)
        if resume_from is not None:
            _check_resume(Path(resume_from), cfg, classes, data.digest)
        try:  # (fit and fit_stream forgot the last fit before their first check)
            return self._fit_checked(
                data,
                classes,
                counts,
                eval_texts,
                eval_targets,
                resume_from,
                checkpoint_metadata,
                callbacks,
            )
        except BaseException:
            self._forget_fit()  # check_is_fitted says "not fitted", as predict does
            raise

    def _forget_fit(self) -> None:
        """Delete every fitted attribute (``classes_``, ``model_``, ``head_``, ...)."""
        for name in [n for n in vars(self) if n.endswith("_") and not n.startswith("_")]:
            delattr(self, name)

    def _fit_checked(
        self,
        data: _TextsInMemory | _TextStream,
        classes: np.ndarray,
        counts: np.ndarray,
        eval_texts: Sequence[Any] | None,
        eval_targets: np.ndarray | None,
        resume_from: str | os.PathLike | None,
        checkpoint_metadata: dict[str, Any] | None,
        callbacks: Sequence[Any],
    ) -> EFTClassifier:
        """:meth:`_fit` after its checks: the stages of Algorithm 1."""
        cfg = self.config
        multi_label = data.multi_label
        fit_begin(callbacks, self)
        accelerator = _accelerator(cfg)
        device = accelerator.device
        from accelerate.utils import set_seed

        set_seed(cfg.seed)
        backbone, tokenizer, name = load_backbone(cfg.model, cfg.trust_remote_code)
        check_model_for_training(name, backbone, tokenizer, cfg.pooling, data.text_pairs)
        self.text_pairs_ = data.text_pairs
        encoder = TextEncoder(backbone, cfg.pooling, _separator_id(tokenizer, data.text_pairs))
        encoder = encoder.to(device)
        flops = _FlopCounter(cfg.flops)
        timings: dict[str, float] = {"bp": 0.0, "feedforward": 0.0, "elm": 0.0}
        history: dict[str, Any] = {}
        fit_start = time.perf_counter()

        clock = time.perf_counter()
        self.max_length_ = model_max_length(cfg.max_length, backbone, tokenizer)
        check_room_for_text(tokenizer, self.max_length_, data.text_pairs)
        pad_id = int(tokenizer.pad_token_id)
        data.tokenize(tokenizer, self.max_length_, pad_id)
        eval_ids = tokenize(tokenizer, eval_texts, self.max_length_) if eval_texts else None
        timings["tokenize"] = time.perf_counter() - clock
        head_weights = self._class_weights(counts, classes)

        self.tokenizer_, self.classes_, self.device_ = tokenizer, classes, device
        self.multi_label_ = multi_label
        self.is_main_process_ = accelerator.is_main_process
        self._autocast = _autocast_dtype(device, cfg)
        head = None
        fused = cfg.method == "eft" and cfg.elm_from_last_epoch
        sink_timer = _PhaseTimer(device)
        sink_check = _FiniteCheck(device, cfg)
        if cfg.method == "eft":
            head = IELMClassifier(
                n_hidden=cfg.n_hidden,
                C=cfg.C,
                activation=cfg.activation,
                n_iter=cfg.n_iter,
                class_weight=head_weights,
                standardize=cfg.standardize,
                device=str(device),
                random_state=cfg.seed,
            )

        linear = None
        unfed: list[int] = []  # fused_fraction < 1: samples of the last epoch's first steps
        stopped_early = False  # by a callback, before the last epoch: no fused features
        kept_logits = None  # bp: the kept epoch's validation logits, when train_backprop had them
        resumed_seconds = 0.0  # the BP seconds of the processes a resumed fit continues
        if cfg.bp_epochs > 0:
            bp_model = EncoderWithLinearHead(encoder, len(classes))
            sink = feeder = None
            if fused:
                feeder = _HeadFeeder(head, len(classes), check_input=not sink_check.defer)

                def sink(
                    features: torch.Tensor, batch_labels: torch.Tensor, weights: Any = None
                ) -> None:
                    sink_check(features)
                    with sink_timer, flops.excluded():  # elm_flops counts the head's work
                        feeder.add(features, batch_labels, weights)

            evaluate = None
            epoch_logits: list[np.ndarray] = []  # bp + tune_thresholds: reused, not recomputed
            if eval_ids is not None:

                def evaluate(model: torch.nn.Module) -> float:
                    linear = EFTModel(model.encoder, model.classifier)
                    with flops.excluded("evaluation"):  # as timings["evaluation"]
                        scores = self._scores(linear, eval_ids, "validation")
                    if cfg.method == "bp" and cfg.tune_thresholds:
                        epoch_logits.append(scores)
                    return _accuracy(scores, eval_targets, threshold=0.0)  # logits

            weights = None
            if head_weights is not None:
                weights = torch.tensor(
                    [head_weights[i] for i in range(len(classes))], dtype=torch.float32
                )
            with flops.phase(
                "bp_feature_extractor", {"bp_classifier": "EncoderWithLinearHead.classifier"}
            ):
                bp_model, bp_result = train_backprop(
                    bp_model,
                    *data.bp_input(cfg, accelerator),
                    pad_id,
                    cfg,
                    accelerator,
                    epochs=cfg.bp_epochs,
                    class_weights=weights,
                    feature_sink=sink,
                    feature_sink_fraction=cfg.fused_fraction,
                    evaluate=evaluate,
                    patience=cfg.early_stopping_patience if cfg.method == "bp" else None,
                    checkpoint_dir=Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None,
                    checkpoint_last=not fused,  # fused mode must redo its last epoch
                    checkpoint_metadata={  # the caller's keys first: eft's own win
                        **(checkpoint_metadata or {}),
                        "config": cfg.to_dict(),
                        "labels": classes.tolist(),
                        "data": data.digest,
                    },
                    resume_from=Path(resume_from) if resume_from else None,
                    on_epoch_end=partial(epoch_end, callbacks) if callbacks else None,
                    sample_weight=data.bp_sample_weight(),
                )
            encoder, linear = bp_model.encoder, bp_model.classifier
            unfed = bp_result.unfed_indices
            stopped_early = bp_result.stopped_by_callback
            if feeder is not None:  # the unfed samples' pass adds to it after (fraction < 1)
                with sink_timer:
                    feeder.flush(last=not bp_result.unfed_indices)
            sink_check.finish()
            sink_seconds = sink_timer.seconds()
            timings["bp"] = bp_result.seconds - sink_seconds
            timings["elm"] += sink_seconds
            resumed_seconds = bp_result.resumed_seconds
            history.update(
                bp_train_loss=bp_result.train_loss,
                bp_validation_accuracy=bp_result.validation_score,
                bp_epoch_seconds=bp_result.epoch_seconds,
                bp_best_epoch=bp_result.best_epoch,
                # fused mode's head statistics (in the last epoch) are head time, as in timings
                bp_seconds_to_best=bp_result.seconds_to_best
                - (sink_seconds if bp_result.best_epoch in (None, bp_result.epochs_run) else 0.0),
                bp_stopped_by_callback=bp_result.stopped_by_callback,
            )
            if evaluate is not None:
                timings["evaluation"] = bp_result.evaluation_seconds
            if epoch_logits:  # the kept epoch's, unless it ran before a resume
                stopping = cfg.early_stopping_patience is not None
                kept = bp_result.best_epoch if stopping else bp_result.epochs_run
                index = kept - 1 - (bp_result.epochs_run - len(epoch_logits))
                kept_logits = epoch_logits[index] if index >= 0 else None

        if cfg.method == "eft":
            if fused and not stopped_early:
                if unfed:
                    self._feed_unfed(feeder, encoder, data, unfed, accelerator, timings, flops)
                clock = time.perf_counter()
                if accelerator.num_processes > 1:
                    head.all_reduce_statistics()
                head._ensure_solved()
                _synchronize(device)
                timings["elm"] += time.perf_counter() - clock
            else:
                self._fit_head(head, encoder, data, accelerator, timings, flops)
            flops.add(
                "elm",
                elm_flops(
                    len(data),
                    encoder.feature_dim,
                    cfg.n_hidden,
                    len(classes),
                    max(1, head.n_iter_),
                ),
            )
            if head.n_iter > 1:
                history["elm_train_scores"] = list(head.train_scores_)
            self.model_ = EFTModel(encoder, head.to_module())
        else:
            self.model_ = EFTModel(encoder, linear)
        self.head_ = head
        self.model_.eval()
        self.temperature_ = 1.0
        self.thresholds_ = np.full(len(classes), self._fixed_threshold) if multi_label else None
        if eval_ids is not None and (head is not None or cfg.tune_thresholds):
            clock = time.perf_counter()  # the trained model's scores (the kept epoch's, bp)
            if kept_logits is None:
                scores = self._scores(self.model_, eval_ids, "validation")
            else:
                scores = kept_logits
            if cfg.tune_thresholds:
                fixed = self._fixed_threshold
                self.thresholds_ = fit_label_thresholds(scores, eval_targets, fixed)
                history["thresholds"] = {
                    "fixed": fixed,
                    "tuned": self.thresholds_.tolist(),
                    "validation_accuracy_fixed": _accuracy(scores, eval_targets, fixed),
                }
            threshold = self._threshold
            history["validation_accuracy"] = _accuracy(scores, eval_targets, threshold)
            if head is not None:  # the I-ELM's ridge outputs need a temperature
                self.temperature_ = fit_temperature(
                    scores, eval_targets, threshold if multi_label else None
                )
                history["calibration"] = {
                    "temperature": self.temperature_,
                    "validation_nll_uncalibrated": _log_loss(scores, eval_targets, 1.0, threshold),
                    "validation_nll": _log_loss(scores, eval_targets, self.temperature_, threshold),
                }
            timings["evaluation"] = timings.get("evaluation", 0.0) + time.perf_counter() - clock
        elif eval_ids is not None:  # method="bp": the kept epoch's (the best, with patience)
            stopping = cfg.early_stopping_patience is not None  # as train_backprop decides
            kept = bp_result.best_epoch if stopping else bp_result.epochs_run
            history["validation_accuracy"] = bp_result.validation_score[kept - 1]
        timings["train"] = timings["bp"] + timings["feedforward"] + timings["elm"]
        # a resumed fit counts the earlier processes' epochs as its "bp" does (not the time
        # lost to the interruption), so the total is never below the training time
        timings["total"] = time.perf_counter() - fit_start + resumed_seconds
        self.timings_ = timings
        self.flops_ = dict(flops.counts) if cfg.flops else None
        self.history_ = history
        self.model_name_ = name
        self.n_train_ = len(data)
        self.fit_config_ = cfg  # what save_pretrained writes, whatever set_params does later
        fit_end(callbacks, self)
        return self

    def _class_weights(self, counts: np.ndarray, classes: np.ndarray) -> dict[int, float] | None:
        weights = self.config.class_weight
        if weights is None:
            return None
        if weights == "balanced":
            return {i: float(counts.sum() / (len(classes) * c)) for i, c in enumerate(counts)}
        if isinstance(weights, dict):
            names = {str(c) for c in classes}
            unknown = [k for k in weights if str(k) not in names]
            if unknown:
                raise InputError(
                    f"class_weight names labels that the training data does not hold: "
                    f"{unknown[:10]}; its labels are {sorted(names)[:20]}."
                )
            return {
                i: float(weights.get(str(c), weights.get(c, 1.0))) for i, c in enumerate(classes)
            }
        raise InputError("class_weight must be None, 'balanced' or a dict {label: weight}.")

    def _fit_head(
        self,
        head: IELMClassifier,
        encoder: TextEncoder,
        data: _TextsInMemory | _TextStream,
        accelerator,
        timings: dict[str, float],
        flops: _FlopCounter,
    ) -> None:
        """Steps 6-9: stream eval-mode features of this rank's shard into the head."""
        cfg = self.config
        device = accelerator.device
        feed_timer = _PhaseTimer(device)
        check = _FiniteCheck(device, cfg)
        cache: list[tuple[Any, ...]] = []
        # standardize: the head reads the features twice (their mean and scale, then its
        # statistics), so in-memory data keeps them (n x d floats) instead of a second pass
        keep = cfg.standardize or (cfg.feature_cache and cfg.n_iter > 1)

        def passes() -> Iterator[tuple[Any, ...]]:
            if cache:
                yield from cache
                return
            for features, batch_labels, weights in self._feature_pass(
                data, encoder, accelerator, feed_timer, check, flops
            ):
                batch = (
                    (features, batch_labels)
                    if weights is None
                    else (features, batch_labels, weights)
                )
                if keep and data.cacheable:  # for the passes after this one
                    cache.append(batch)
                yield batch

        start = time.perf_counter()
        head.fit_batches(
            passes,
            classes=np.arange(len(self.classes_)),
            all_reduce=accelerator.num_processes > 1,
        )
        _synchronize(device)
        elapsed = time.perf_counter() - start
        feed_seconds = feed_timer.seconds()
        timings["feedforward"] += feed_seconds
        timings["elm"] += elapsed - feed_seconds

    def _feed_unfed(
        self,
        feeder: _HeadFeeder,
        encoder: TextEncoder,
        data: _TextsInMemory,
        indices: list[int],
        accelerator,
        timings: dict[str, float],
        flops: _FlopCounter,
    ) -> None:
        """Fused mode with ``fused_fraction < 1``: add the eval-mode features (final encoder)
        of the samples this rank trained on before the fused steps to the head's statistics,
        through the fused steps' ``feeder``."""
        device = accelerator.device
        feed_timer, head_timer = _PhaseTimer(device), _PhaseTimer(device)
        check = _FiniteCheck(device, self.config)
        for features, batch_labels, weights in self._feature_pass(
            data, encoder, accelerator, feed_timer, check, flops, np.asarray(indices)
        ):
            with head_timer:
                feeder.add(features, torch.as_tensor(batch_labels, device=device), weights)
        with head_timer:
            feeder.flush()
        timings["feedforward"] += feed_timer.seconds()
        timings["elm"] += head_timer.seconds()

    def _feature_pass(
        self,
        data: _TextsInMemory | _TextStream,
        encoder: TextEncoder,
        accelerator,
        timer: _PhaseTimer,
        check: _FiniteCheck,
        flops: _FlopCounter,
        indices: np.ndarray | None = None,
    ) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray | None]]:
        """``(features, label indices, sample weights or None)`` in eval mode of this rank's
        share of the training data (or of the rows ``indices``), timed as the feedforward
        phase; the non-finite check is settled before the pass ends, so a bad pass raises
        before the head is solved."""
        cfg = self.config
        stream = data.feature_batches(
            encoder,
            cfg.eval_batch_size,
            accelerator.device,
            self._autocast,
            accelerator.process_index,
            accelerator.num_processes,
            progress=cfg.progress and accelerator.is_main_process,
            **({} if indices is None else {"indices": indices}),
        )
        while True:
            with timer, flops.phase("feedforward"):
                item = next(stream, None)
            if item is None:
                check.finish()
                return
            batch_labels, weights, features = item
            check(features)
            yield features, batch_labels, weights

    # -- inference ------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedInputError(
                "This EFTClassifier is not fitted; call fit() or from_pretrained()."
            )

    def _scores(
        self, model: torch.nn.Module, input_ids: list[list[int]], description: str = "predict"
    ) -> np.ndarray:
        """``model``'s outputs for every text, in eval mode; a progress bar (with
        ``config.progress``, on the main process) for a pass that takes over 2 seconds."""
        out = np.zeros((len(input_ids), 0), dtype=np.float32)
        for rows, scores in extract_features(
            model,
            input_ids,
            int(self.tokenizer_.pad_token_id),
            self.config.eval_batch_size,
            self.device_,
            self._autocast,
            progress=self.config.progress and self.is_main_process_,
            description=description,
            progress_delay=2.0,
        ):
            if out.shape[1] == 0:
                out = np.zeros((len(input_ids), scores.shape[1]), dtype=np.float32)
            out[rows] = scores.cpu().numpy()
        return out

    def _input_ids(self, texts: Sequence[Any]) -> list[list[int]]:
        self._check_fitted()
        self.config.validate()  # set_params(eval_batch_size=0) after fit: named, not a crash
        texts, _ = check_texts_and_labels(texts, None, "input")
        pairs = getattr(self, "text_pairs_", False)
        if is_text_pair(texts[0]) != pairs:
            raise InputError(
                f"This model was trained on {_kind(pairs)}, but the input holds "
                f"{_kind(not pairs)}; pass "
                + ("(text, text_pair) tuples." if pairs else "one string per text.")
            )
        return tokenize(self.tokenizer_, texts, self.max_length_)

    @property
    def _fixed_threshold(self) -> float:
        """Multi-label: the output above which a label is predicted unless thresholds are tuned
        (0.5 for the I-ELM's ridge outputs onto 0/1 targets, 0 for the baseline's logits)."""
        return 0.5 if self.head_ is not None else 0.0

    @property
    def _threshold(self) -> float | np.ndarray:
        """Multi-label: each label's threshold, ``thresholds_`` (the fixed one in older saves)."""
        thresholds = getattr(self, "thresholds_", None)
        return self._fixed_threshold if thresholds is None else thresholds

    def decision_function(self, texts: Sequence[Any]) -> np.ndarray:
        """Class scores (n, n_classes): I-ELM outputs, or the baseline's logits. For two
        classes (single-label), ``scores[:, 1] - scores[:, 0]``, shape (n,): the second
        class's margin, as scikit-learn's binary classifiers give it (its ``roc_auc`` scorer
        and ``CalibratedClassifierCV`` read it so)."""
        scores = self._class_scores(texts)
        if len(self.classes_) == 2 and not getattr(self, "multi_label_", False):
            return scores[:, 1] - scores[:, 0]
        return scores

    def _class_scores(self, texts: Sequence[Any]) -> np.ndarray:
        """Every class's score (n, n_classes), also for two classes."""
        input_ids = self._input_ids(texts)  # checks that the model is fitted first
        return self._scores(self.model_, input_ids)

    def predict(self, texts: Sequence[Any]) -> np.ndarray:
        """Predicted label of every text; multi-label models: a 0/1 indicator matrix (n,
        n_classes), columns in the order of ``classes_``, as scikit-learn's multi-label
        classifiers give (each text's labels: ``classes_[row == 1]``)."""
        if getattr(self, "multi_label_", False):  # a label's probability above 0.5
            return (self.predict_proba(texts) > 0.5).astype(np.int64)
        scores = self._class_scores(texts)
        return self.classes_[scores.argmax(1)]

    def predict_proba(self, texts: Sequence[Any]) -> np.ndarray:
        """``softmax(scores / temperature_)``; same argmax as :meth:`predict`.

        With validation data the I-ELM's outputs are temperature-scaled (``temperature_``,
        fitted on the validation texts: :mod:`eft.calibration`), so that the scores can be
        read and thresholded as the softmax of a fine-tuned head; without, ``temperature_`` is
        1 and the plain softmax of the ridge outputs is far too flat (not calibrated).
        Multi-label models: each label's ``sigmoid((score - threshold) / temperature_)``, the
        threshold 0.5 for the I-ELM's outputs and 0 for the baseline's logits, or the label's
        own (``thresholds_``, with ``tune_thresholds``); :meth:`predict` gives the labels whose
        probability is above 0.5.
        """
        return self._probabilities(self._class_scores(texts))

    def _probabilities(self, scores: np.ndarray) -> np.ndarray:
        """:meth:`predict_proba` of already computed class scores (:meth:`_class_scores`)."""
        scores = torch.from_numpy(scores)
        temperature = getattr(self, "temperature_", 1.0)
        if getattr(self, "multi_label_", False):
            threshold = torch.as_tensor(self._threshold, dtype=torch.float64)
            return torch.sigmoid((scores.double() - threshold) / temperature).numpy()
        return softmax_keeping_argmax(scores, temperature).numpy()

    def features(self, texts: Sequence[Any]) -> np.ndarray:
        """Pooled features of the (fine-tuned) encoder, as the head sees them."""
        input_ids = self._input_ids(texts)
        return self._scores(self.model_.encoder, input_ids, "features")

    def score(self, texts: Sequence[Any], labels: Any, sample_weight: Any = None) -> float:
        """Accuracy on ``texts`` (multi-label: the share of texts whose label set is exactly
        right, scikit-learn's subset accuracy), weighted by ``sample_weight`` if given."""
        from sklearn.metrics import accuracy_score

        multi_label = getattr(self, "multi_label_", False)
        self._check_fitted()
        texts, labels = check_texts_and_labels(texts, labels, "scoring")
        check_label_form(labels, multi_label, "scoring")
        _, targets = encode_labels(labels, self.classes_, "scoring")
        if not multi_label:  # label names the model does not know are refused, not missed
            right = self._class_scores(texts).argmax(1) == targets
        else:
            right = (self.predict(texts) == targets).all(1)
        return float(accuracy_score(np.ones_like(right), right, sample_weight=sample_weight))

    # -- persistence ----------------------------------------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write encoder + tokenizer (safetensors), the head and ``eft_config.json``, atomically.

        Everything is written to a temporary folder beside ``directory`` and renamed into
        place, so an interrupted save never leaves a folder that looks complete.
        """
        self._check_fitted()
        target = Path(directory)
        _check_output_dir(target)
        with atomic_dir(target) as staging:
            with quiet_transformers():
                self.model_.encoder.backbone.save_pretrained(staging)
                written = self.tokenizer_.save_pretrained(staging)
            # checked at load: without tokenizer.json a tokenizer loads with a handful of tokens
            tokenizer_files = sorted(
                Path(f).name for f in written if Path(f).parent == staging and Path(f).is_file()
            )
            if self.head_ is not None:
                self.head_.save(staging / ELM_HEAD_FILE)
            else:
                linear = self.model_.head
                save_file(
                    {
                        "weight": linear.weight.detach().cpu().contiguous(),
                        "bias": linear.bias.detach().cpu().contiguous(),
                    },
                    staging / LINEAR_HEAD_FILE,
                )
            meta = {**self._metadata(tokenizer_files), "files": file_digests(staging)}
            (staging / CONFIG_FILE).write_text(
                json.dumps(meta, indent=2, default=json_default), encoding="utf-8"
            )
        return target

    def _metadata(self, tokenizer_files: list[str]) -> dict[str, Any]:
        import transformers

        from eft import __version__

        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "eft_version": __version__,
            # the model's own recipe: a set_params after fit changes the next fit, not this
            # model (its pooling, max_length, precision and head were fixed by fit)
            "config": getattr(self, "fit_config_", self.config).to_dict(),
            "base_model": self.model_name_,
            "labels": self.classes_.tolist(),
            "label_type": "int" if self.classes_.dtype.kind in "iu" else "str",
            "feature_dim": self.model_.encoder.feature_dim,
            "tokenizer_files": tokenizer_files,
            "tokenizer_size": len(self.tokenizer_),
            "text_pairs": getattr(self, "text_pairs_", False),
            "multi_label": getattr(self, "multi_label_", False),
            "label_separator": getattr(self, "label_separator_", None),
            "temperature": getattr(self, "temperature_", 1.0),
            "thresholds": getattr(self, "thresholds_", None),  # a list (json_default)
            "timings": getattr(self, "timings_", {}),
            "flops": getattr(self, "flops_", None),
            "history": getattr(self, "history_", {}),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        device: str = "auto",
        trust_remote_code: bool = False,
        inference_precision: str | None = None,
    ) -> EFTClassifier:
        """Load a model written by :meth:`save_pretrained` (JSON + safetensors only, no pickle).

        A model trained on a GPU loads on a CPU. An incomplete folder or one from an
        incompatible version raises an error naming the file or field. ``inference_precision``
        ("auto", "no", "bf16", "fp16") sets the autocast of its predictions instead of the
        saved one, as ``device`` sets where they run (a save writes the saved one again).
        """
        from transformers import AutoModel, AutoTokenizer

        folder = Path(directory)
        meta = read_model_metadata(folder)
        check_model_dir(folder, trust_remote_code)
        check_file_digests(folder, meta.get("files"))  # older saves: not recorded
        # the saved run's checkpoint folder is not this model's: a refit saves none unless asked;
        # remote code runs only if the caller says so, never because a file says so
        config = EFTConfig.from_dict(
            {
                **meta["config"],
                "device": device,
                "checkpoint_dir": None,
                "trust_remote_code": trust_remote_code,
            }
        )
        head_file = ELM_HEAD_FILE if config.method == "eft" else LINEAR_HEAD_FILE
        if not (folder / head_file).is_file():
            raise InputError(f"{folder} is incomplete: {head_file} is missing.")
        saved_config = config
        if inference_precision is not None:
            config = config.replace(inference_precision=inference_precision)
        accelerator_device = _accelerator(config).device
        for name in meta.get("tokenizer_files") or []:  # older saves: not recorded
            if not (folder / str(name)).is_file():
                raise InputError(f"{folder} is incomplete: {name} is missing.")
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(
                    folder, trust_remote_code=trust_remote_code
                )
                tokenizer.padding_side = "right"  # as eft pads (older saves may say left)
                backbone, loading = AutoModel.from_pretrained(
                    folder,
                    trust_remote_code=trust_remote_code,
                    use_safetensors=True,
                    output_loading_info=True,
                )
        except (OSError, ValueError, RuntimeError, SafetensorError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise InputError(
                f"{folder} is incomplete or damaged: {type(error).__name__}: {first_line}"
            ) from error
        # a saved encoder loads whole: a weight missing (randomly initialised by transformers),
        # left over or of another shape means the folder's weights or config.json changed
        damage = {
            kind: sorted(map(str, loading.get(kind) or ()))
            for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
        }
        if any(damage.values()):
            found = "; ".join(
                f"{kind.replace('_', ' ')}: {', '.join(keys[:3])}"
                + (" ..." if len(keys) > 3 else "")
                for kind, keys in damage.items()
                if keys
            )
            raise InputError(
                f"{folder}: the encoder's weights (model.safetensors) do not match its "
                f"config.json ({found}); the folder was changed after it was saved: save it again."
            )
        size = meta.get("tokenizer_size")  # older saves: not recorded
        if size is not None and len(tokenizer) != size:
            raise InputError(
                f"{folder}: the tokenizer there has {len(tokenizer)} tokens, but the model was "
                f"saved with {size}; the folder's tokenizer files were changed: save it again."
            )
        text_pairs = meta.get("text_pairs", False)  # older saves: single texts
        if not isinstance(text_pairs, bool):
            raise InputError(f"{folder / CONFIG_FILE}: 'text_pairs' must be true or false.")
        encoder = TextEncoder(backbone, config.pooling, _separator_id(tokenizer, text_pairs))
        encoder = encoder.to(accelerator_device)
        multi_label = meta.get("multi_label", False)  # older saves: one label per text
        if not isinstance(multi_label, bool):
            raise InputError(f"{folder / CONFIG_FILE}: 'multi_label' must be true or false.")
        model = cls(config)
        model.fit_config_ = saved_config  # what a save writes again, whatever set_params does
        model.text_pairs_ = text_pairs
        model.multi_label_ = multi_label
        separator = meta.get("label_separator")  # older saves: not recorded
        if separator is not None and not (isinstance(separator, str) and separator):
            raise InputError(
                f"{folder / CONFIG_FILE}: 'label_separator' must be a non-empty string or null."
            )
        model.label_separator_ = separator
        if config.method == "eft":
            try:
                model.head_ = IELMClassifier.load(
                    folder / head_file, device=str(accelerator_device)
                )
            except ValueError as error:  # the file named, in one line
                raise InputError(str(error)) from None
            if model.head_.n_features_in_ != encoder.feature_dim:
                raise InputError(
                    f"{folder / head_file} takes {model.head_.n_features_in_} features, but the "
                    f"encoder gives {encoder.feature_dim}; the folder was changed after it was "
                    f"saved: save it again."
                )
            head = model.head_.to_module()
        else:
            model.head_ = None
            head = _saved_linear_head(folder / head_file, encoder.feature_dim)
        model.model_ = EFTModel(encoder, head.to(accelerator_device)).eval()
        model.tokenizer_ = tokenizer
        model.max_length_ = model_max_length(config.max_length, backbone, tokenizer)
        dtype = np.int64 if meta["label_type"] == "int" else np.str_
        model.classes_ = np.asarray(meta["labels"], dtype=dtype)
        outputs = len(model.head_.classes_) if model.head_ is not None else head.out_features
        if len(model.classes_) != outputs:
            raise InputError(
                f"{folder / CONFIG_FILE}: field 'labels' lists {len(model.classes_)} labels, but "
                f"the head has {outputs} outputs; fix the file or retrain."
            )
        model.device_ = accelerator_device
        model._autocast = _autocast_dtype(accelerator_device, config)
        model.temperature_ = _temperature(folder, meta.get("temperature", 1.0))  # older saves: 1
        model.thresholds_ = _thresholds(folder, meta.get("thresholds"), model)
        model.timings_ = meta.get("timings", {})
        model.flops_ = meta.get("flops")
        model.history_ = meta.get("history", {})
        model.model_name_ = meta.get("base_model")
        model.is_main_process_ = True
        return model


def _saved_linear_head(path: Path, feature_dim: int) -> torch.nn.Linear:
    """The baseline's linear head from ``path``: ``weight`` (classes x features) and ``bias``,
    float32/64 and finite, or an error naming the file."""
    try:
        tensors = load_file(path)
    except SafetensorError as error:
        raise InputError(f"{path} is damaged (not a readable safetensors file: {error}).") from None
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if (
        weight is None
        or bias is None
        or weight.ndim != 2
        or weight.shape[1] != feature_dim
        or tuple(bias.shape) != (weight.shape[0],)
        or not all(t.dtype in (torch.float32, torch.float64) for t in (weight, bias))
    ):
        raise InputError(
            f"{path} is damaged: it needs a float 'weight' (classes x {feature_dim}) and a "
            f"'bias' (classes), and holds {sorted(tensors)}."
        )
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise InputError(f"{path} is damaged: its weights hold NaN or infinite values.")
    head = torch.nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return head


class _TextsInMemory:
    """Training texts held in memory, tokenised once."""

    cacheable = True  # the features of further I-ELM passes may be kept in memory

    def __init__(
        self, texts: Sequence[Any], label_index: np.ndarray, sample_weight: np.ndarray | None
    ) -> None:
        self.texts = texts
        self.label_index = label_index  # class indices, or (multi-label) 0/1 indicator rows
        self.sample_weight = sample_weight  # float64, one per text, or None
        self.text_pairs = is_text_pair(texts[0])
        self.multi_label = label_index.ndim == 2

    def __len__(self) -> int:
        return len(self.texts)

    def tokenize(self, tokenizer, max_length: int, pad_id: int) -> None:
        self.input_ids = tokenize(tokenizer, self.texts, max_length)
        self.pad_id = pad_id

    def bp_input(self, config: EFTConfig, accelerator) -> tuple[list[list[int]], np.ndarray]:
        return self.input_ids, self.label_index

    def fingerprint(self, counts: np.ndarray) -> str:
        """A digest of the texts, labels and sample weights (see :func:`_check_resume`)."""
        from eft.checkpoint import json_digest

        return json_digest(list(self.texts), self.label_index, self.sample_weight)

    def bp_sample_weight(self) -> torch.Tensor | None:
        """The BP stage's weight per text (float64), or None."""
        return None if self.sample_weight is None else torch.from_numpy(self.sample_weight)

    def feature_batches(
        self,
        encoder,
        batch_size,
        device,
        autocast,
        rank: int,
        world_size: int,
        progress: bool,
        indices: np.ndarray | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None, torch.Tensor]]:
        """``(label indices, sample weights or None, features)`` of this rank's shard
        ``range(rank, N, world_size)``, or of the rows ``indices`` when given."""
        shard = np.arange(len(self.input_ids))[rank::world_size] if indices is None else indices
        for rows, features in extract_features(
            encoder,
            self.input_ids,
            self.pad_id,
            batch_size,
            device,
            autocast,
            indices=shard,
            progress=progress,
        ):
            weights = None if self.sample_weight is None else self.sample_weight[rows]
            yield self.label_index[rows], weights, features


class _TextStream:
    """Training rows read from a stream chunk by chunk, tokenised on the fly (see
    :mod:`eft.streaming`)."""

    cacheable = False  # a stream may not fit in memory, nor its features: read it again
    text_pairs = False  # set from the stream's first pass (eft.streaming.scan_rows)
    multi_label = False  # set from the first pass too: label sets (tuples) in every row

    def __init__(self, rows, n_rows: int, classes: np.ndarray, chunk_rows: int) -> None:
        self.rows = rows
        self.n_rows = n_rows
        self.label_of = {label: i for i, label in enumerate(classes.tolist())}
        self.chunk_rows = chunk_rows

    def __len__(self) -> int:
        return self.n_rows

    def tokenize(self, tokenizer, max_length: int, pad_id: int) -> None:
        self.encode = lambda texts: tokenize(tokenizer, texts, max_length)
        self.pad_id = pad_id

    def bp_input(self, config: EFTConfig, accelerator) -> tuple[_StreamBatches, None]:
        rank, world_size = accelerator.process_index, accelerator.num_processes
        return _StreamBatches(self, config, rank, world_size), None

    def bp_sample_weight(self) -> None:
        return None  # fit_stream takes no sample weights

    def fingerprint(self, counts: np.ndarray) -> str:
        """A digest of the stream's size and label counts (its rows are not read again)."""
        from eft.checkpoint import json_digest

        return json_digest("stream", self.n_rows, list(self.label_of), counts)

    def feature_batches(
        self, encoder, batch_size, device, autocast, rank: int, world_size: int, progress: bool
    ) -> Iterator[tuple[np.ndarray, None, torch.Tensor]]:
        """``(label indices, None, features)`` of this rank's rows (``g % world_size ==
        rank``; no sample weights); multi-label: 0/1 label rows."""
        from tqdm.auto import tqdm

        from eft.streaming import label_indices, shard_chunks

        bar = tqdm(
            total=len(range(rank, self.n_rows, world_size)),
            desc="feedforward",
            disable=not progress,
            leave=False,
        )
        with bar:
            for texts, labels in shard_chunks(self.rows, self.chunk_rows, rank, world_size):
                index = label_indices(labels, self.label_of, self.multi_label)
                for rows, features in extract_features(
                    encoder, self.encode(texts), self.pad_id, batch_size, device, autocast
                ):
                    bar.update(len(rows))
                    yield index[rows], None, features


class _StreamBatches:
    """One rank's BP batches over a :class:`_TextStream`, for :func:`train_backprop`."""

    def __init__(self, data: _TextStream, config: EFTConfig, rank: int, world_size: int):
        self.data, self.config, self.rank, self.world_size = data, config, rank, world_size

    def __len__(self) -> int:
        from eft.streaming import bp_steps_per_epoch

        return bp_steps_per_epoch(
            self.data.n_rows, self.data.chunk_rows, self.config.batch_size, self.world_size
        )

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        from eft.encoder import pad_batch
        from eft.streaming import bp_batches

        for ids, labels in bp_batches(
            self.data.rows,
            self.data.label_of,
            self.data.encode,
            epoch=epoch,
            seed=self.config.seed,
            batch_size=self.config.batch_size,
            chunk_rows=self.data.chunk_rows,
            rank=self.rank,
            world_size=self.world_size,
            multi_label=self.data.multi_label,
        ):
            batch = pad_batch(ids, self.data.pad_id)
            batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
            yield batch


def _accuracy(scores: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> float:
    """Share of rows predicted right: the argmax against class indices, or (multi-label, 0/1
    rows) every label's ``score > threshold`` against its row, the subset accuracy."""
    if targets.ndim == 2:
        return float(((scores > threshold) == (targets == 1)).all(1).mean())
    return float((scores.argmax(1) == targets).mean())


def _log_loss(
    scores: np.ndarray, targets: np.ndarray, temperature: float, threshold: float | np.ndarray
) -> float:
    if targets.ndim == 2:
        return binary_negative_log_likelihood(scores, targets, temperature, threshold)
    return negative_log_likelihood(scores, targets, temperature)


def check_label_form(labels: Labels, multi_label: bool, what: str) -> None:
    """The labels must be label sets for a multi-label model, single labels otherwise."""
    if (not isinstance(labels, np.ndarray) or labels.ndim == 2) != multi_label:
        given = "label sets (multi-label)" if not multi_label else "one label per text"
        raise InputError(
            f"The {what} labels are {given}, but the model is "
            + (
                "multi-label: give each text a list of its labels."
                if multi_label
                else "single-label (it was trained on one label per text)."
            )
        )


def _check_multi_label_config(config: EFTConfig) -> None:
    """Options of single-label training that multi-label training (a sigmoid per label in the
    BP stage, ridge onto 0/1 rows in the head) does not have."""
    for name, off in (
        ("class_weight", None),
        ("label_smoothing", 0.0),
        ("contrastive_weight", 0.0),
    ):
        if getattr(config, name) != off:
            raise InputError(
                f"{name}={getattr(config, name)!r} is for single-label data; multi-label "
                f"training does not support it. Leave {name} at {off!r}."
            )


def _kind(text_pairs: bool) -> str:
    return "text pairs" if text_pairs else "single texts"


def _separator_id(tokenizer: Any, text_pairs: bool) -> int | None:
    """The separator that ends a pair's first segment (token types; see ``TextEncoder``)."""
    return getattr(tokenizer, "sep_token_id", None) if text_pairs else None


def _check_finite(features: torch.Tensor, config: EFTConfig) -> None:
    """Stop with a clear message when the encoder emits NaN/inf (e.g. fp16 overflow)."""
    if bool(torch.isfinite(features.sum())):
        return
    _raise_non_finite(int((~torch.isfinite(features)).any(1).sum()), config)


def _raise_non_finite(bad: int | str, config: EFTConfig) -> None:
    raise InputError(
        f"The encoder produced non-finite features for {bad} text(s) (mixed precision "
        f"{config.mixed_precision!r}; fp16 overflows easily). Use --mixed-precision bf16 or no, "
        f"or a lower learning rate if the BP stage diverged."
    )


def elm_flops(
    n_samples: int, n_features: int, n_hidden: int, n_outputs: int, n_solves: int
) -> float:
    """FLOPs of steps 8-9, counted analytically (paper Table 7 and Appendix G).

    Hidden layer ``2 N d nh`` (in fused mode too, from the BP stage's features),
    ``Gamma`` ``2 N nh^2``, ``Lambda`` ``2 N r nh``, and per solve the factorisation, counted
    as the paper's ``2/3 nh^3`` (Cholesky itself needs half of it), plus ``2 r nh^2`` for the
    two triangular solves. Each iteration beyond the first adds a pass that recomputes the
    hidden layer and the outputs (``2 N d nh + 2 N r nh``).
    """
    one_pass = 2.0 * n_samples * n_features * n_hidden
    statistics = 2.0 * n_samples * n_hidden**2 + 2.0 * n_samples * n_outputs * n_hidden
    solve = 2.0 / 3.0 * n_hidden**3 + 2.0 * n_outputs * n_hidden**2
    extra = (n_solves - 1) * (one_pass + 2.0 * n_samples * n_outputs * n_hidden)
    return one_pass + statistics + n_solves * solve + extra


def _temperature(folder: Path, value: Any) -> float:
    """The saved softmax temperature, checked: a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < np.inf:
        raise InputError(
            f"{folder / CONFIG_FILE}: field 'temperature' is {value!r}; it must be a positive "
            f"number (1 for no calibration). Fix the file or retrain."
        )
    return float(value)


def _thresholds(folder: Path, values: Any, model: EFTClassifier) -> np.ndarray | None:
    """The saved per-label thresholds of a multi-label model, checked (older saves: none, the
    fixed threshold); single-label models have none."""
    if not model.multi_label_:
        return None
    if values is None:
        return np.full(len(model.classes_), model._fixed_threshold)
    if (
        not isinstance(values, list)
        or len(values) != len(model.classes_)
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
            for v in values
        )
    ):
        raise InputError(
            f"{folder / CONFIG_FILE}: field 'thresholds' must list one finite number per label "
            f"({len(model.classes_)}); fix the file or retrain."
        )
    return np.asarray(values, dtype=np.float64)


# what a checkpoint's BP state depends on: resuming it under other values is refused
_RESUME_FIELDS = ("model", "method", "learning_rate", "weight_decay", "warmup_ratio")
_RESUME_FIELDS += ("layer_lr_decay", "label_smoothing", "contrastive_weight", "lr_schedule")
_RESUME_FIELDS += ("batch_size", "max_length", "pooling", "seed", "class_weight")
_RESUME_FIELDS += ("max_grad_norm", "contrastive_temperature")  # precision may follow the device


def _check_resume(folder: Path, config: EFTConfig, classes: np.ndarray, data: str) -> None:
    """Refuse a checkpoint written for other labels, other training data (``data``: its
    fingerprint) or another BP recipe (``bp_epochs`` may differ: a run may go on for more
    epochs)."""
    from eft.checkpoint import read_checkpoint

    state = read_checkpoint(folder)
    labels = json.loads(json.dumps(classes.tolist(), default=json_default))
    if "labels" in state and state["labels"] != labels:
        raise InputError(
            f"{folder} was written for the labels {state['labels'][:20]}, not "
            f"{labels[:20]}: resume it with its own training data, or start afresh."
        )
    if state.get("data", data) != data:  # older checkpoints: not recorded
        raise InputError(
            f"{folder} was written for other training data (other texts, labels, sample "
            f"weights or rows): resume it with its own training data, or start afresh."
        )
    saved = state.get("config", {})
    ours = json.loads(json.dumps(config.to_dict(), default=json_default))  # as saved
    changed = [k for k in _RESUME_FIELDS if k in saved and saved[k] != ours[k]]
    if changed:
        values = ", ".join(f"{k} {saved[k]!r} there, {ours[k]!r} here" for k in changed)
        raise InputError(
            f"{folder} was written by a run with other settings ({values}): resume it with "
            f"its own, or start afresh."
        )


def read_model_metadata(folder: Path) -> dict[str, Any]:
    """``eft_config.json`` of a saved model, checked field by field."""
    if not folder.is_dir():
        raise InputError(f"No model folder at {folder}.{interrupted_save_hint(folder)}")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise InputError(
            f"{folder} is not an eft model folder: {CONFIG_FILE} is missing (write models with "
            f"`eft train --output DIR` or EFTClassifier.save_pretrained)."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is damaged: {error}") from error
    if not isinstance(meta, dict):
        raise InputError(
            f"{path} is damaged: it holds a JSON {type(meta).__name__}, not an object."
        )
    if meta.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: field 'format' is {meta.get('format')!r}, not {MODEL_FORMAT!r}.")
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise InputError(
            f"{path}: field 'format_version' is {meta.get('format_version')!r}; this eft reads "
            f"version {MODEL_FORMAT_VERSION}. Use a matching eft release or retrain."
        )
    for key in ("config", "labels", "label_type"):
        if key not in meta:
            raise InputError(f"{path}: field {key!r} is missing.")
    if not isinstance(meta["config"], dict):
        raise InputError(f"{path}: field 'config' must be an object of EFTConfig fields.")
    if meta["label_type"] not in ("int", "str"):
        raise InputError(f'{path}: field \'label_type\' must be "int" or "str".')
    kind = int if meta["label_type"] == "int" else str
    labels = meta["labels"]
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(v, kind) and not isinstance(v, bool) for v in labels)
        or len(set(labels)) != len(labels)
    ):
        raise InputError(
            f"{path}: field 'labels' must list the model's distinct labels, each "
            f"{'an integer' if kind is int else 'a string'} (its 'label_type' is "
            f"{meta['label_type']!r}); fix the file or retrain."
        )
    return meta


def _autocast_dtype(device: torch.device, config: EFTConfig) -> torch.dtype | None:
    """The autocast dtype of the inference passes (feature pass, prediction), or None.

    ``config.inference_precision``, or with "same" ``config.mixed_precision``. "auto" is bf16
    on a CUDA GPU that supports it and float32 elsewhere. An explicit "bf16" also applies on
    CPU: on a CPU with AVX512-BF16 it made the feature pass 1.8x faster (1,500 AG News texts,
    MiniLM-L6, features within 0.4 %), so it is worth opting into there; CPUs without native
    bf16 emulate it (6.4x slower on an AVX2 host: a warning says so). fp16 autocast is for
    CUDA only.
    """
    precision = config.inference_precision
    if precision == "same":
        precision = config.mixed_precision
    precision = _resolve_precision(precision, device.type == "cuda")
    if device.type == "cuda":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    _warn_if_emulated_bf16(precision, device.type)
    return torch.bfloat16 if precision == "bf16" else None


def _check_output_dir(target: Path) -> None:
    """Refuse, before any training, a model folder a save could not write or would wrongly
    replace: a file, a folder that is not an eft model, a model folder holding files its save
    did not write (a save replaces the whole folder), or a place that is not writable."""
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / CONFIG_FILE).is_file())
    ):
        raise InputError(
            f"Output {target} exists and is not an eft model folder; choose another path or "
            f"remove it."
        )
    if target.is_dir() and (target / CONFIG_FILE).is_file():
        try:
            saved = json.loads((target / CONFIG_FILE).read_text(encoding="utf-8")).get("files")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            saved = None  # a damaged model is replaced, as before
        if isinstance(saved, dict):  # older saves do not list their files
            present = {
                p.relative_to(target).as_posix() for p in target.rglob("*") if not p.is_dir()
            }
            # hidden files go with the folder too (.git); only the Finder's litter may
            foreign = sorted(
                name
                for name in present - set(saved) - {CONFIG_FILE}
                if Path(name).name != ".DS_Store"
            )
            if foreign:
                raise InputError(
                    f"Output {target} is an eft model folder that also holds files its save did "
                    f"not write ({', '.join(foreign[:5])}); a save replaces the whole folder. "
                    f"Move them, or choose another path."
                )
    check_writable(target)
