"""Hyper-parameters of an EFT run (one dataclass, saved as JSON beside the model)."""

from __future__ import annotations

import dataclasses
import json
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eft.errors import InputError

METHODS = ("eft", "bp")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEFAULT_LEARNING_RATE = {"eft": 2e-4, "bp": 5e-5}
LR_SCHEDULES = ("linear", "constant", "linear_per_epoch")
POOLINGS = ("cls", "mean", "cls_last4")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
# the fields' kinds, checked before their values (a JSON "16" or null is named, not a TypeError)
_INTEGER_FIELDS = ("bp_epochs", "batch_size", "eval_batch_size", "max_length", "n_hidden")
_INTEGER_FIELDS += ("n_iter", "seed")
_NUMBER_FIELDS = ("weight_decay", "warmup_ratio", "layer_lr_decay", "label_smoothing")
_NUMBER_FIELDS += ("contrastive_weight", "contrastive_temperature", "max_grad_norm", "C")
_NUMBER_FIELDS += ("fused_fraction",)
_BOOLEAN_FIELDS = ("tune_thresholds", "standardize", "elm_from_last_epoch", "feature_cache")
_BOOLEAN_FIELDS += ("trust_remote_code", "flops", "progress")
_STRING_FIELDS = ("method", "lr_schedule", "pooling", "activation", "device", "mixed_precision")
_STRING_FIELDS += ("inference_precision",)


@dataclass
class EFTConfig:
    """Everything that defines an EFT (or baseline) training run.

    Stages follow the paper's Algorithm 1: ``bp_epochs`` epochs of backprop with a linear head
    (steps 1-5), one feedforward pass in eval mode (steps 6-7), the closed-form I-ELM head
    (steps 8-9, ``n_hidden``, ``C``, ``activation``, ``n_iter``).
    """

    model: str | None = None
    """Local folder or hub id of a Hugging Face encoder; None = the embedded all-MiniLM-L6-v2."""
    method: str = "eft"
    """"eft" (BP epochs + I-ELM head) or "bp" (standard fine-tuning, the linear head is kept)."""
    bp_epochs: int = 1
    """k, the backprop epochs (0 = frozen pretrained encoder + I-ELM head). For method="bp",
    the maximum number of epochs."""
    learning_rate: float | None = None
    """Peak AdamW rate of the BP stage. None (the default) becomes
    ``DEFAULT_LEARNING_RATE[method]``: 2e-4 for EFT's brief BP stage, 5e-5 (the usual
    fine-tuning rate) for method="bp". The higher rate for EFT is the paper's "non-optimal"
    rate: with MiniLM-L6 and k = 1 it beat 5e-5 on the test sets of TREC, SST-2, MELD,
    AG News and an IMDb subset (benchmarks/results/recipe_k1_*.md), while fine-tuning did not
    gain from it. Base- and large-size encoders usually need
    lower rates (the paper used 1e-5 with RoBERTa-large): pass one, or let
    ``eft tune --grid-learning-rate`` choose."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0
    """Share of the BP steps over which the rate rises linearly to its peak (of every epoch
    with ``lr_schedule="linear_per_epoch"``). 0 (none) by default: at k = 1, 0.1 moved the test
    score by +0.68, -0.90, +0.30 and -0.80 points on MELD, an IMDb subset (two seeds) and
    TREC-6 (benchmarks/results/recipe_k1_*_seed4*.md)."""
    layer_lr_decay: float = 1.0
    """Layer-wise learning-rate decay d in (0, 1]: the head trains at ``learning_rate``, each
    transformer block below the top at d times the rate of the block above, the embeddings
    last (ELECTRA/DeBERTa fine-tuning practice). 1 (off) by default."""
    label_smoothing: float = 0.0
    """Label smoothing of the BP stage's cross-entropy (``torch.nn.CrossEntropyLoss``), in
    [0, 1). 0 (off) by default: at k = 1, 0.1 moved the test score by -0.49, -0.10, +0.70 and
    0.00 on MELD, an IMDb subset (two seeds) and TREC-6 (docs/results.md)."""
    contrastive_weight: float = 0.0
    """Weight w in [0, 1) of a supervised contrastive loss on the pooled features (the I-ELM's
    input) in the BP stage: (1 - w) cross-entropy + w SCL (Khosla et al. 2020; Gunel et al.
    2021 for fine-tuning), pulling each batch's same-label features together. 0 (off) by
    default: at k = 1, w = 0.5 moved the test score by +0.08, -0.25, +0.95 and -0.80 on MELD,
    an IMDb subset (two seeds) and TREC-6 (docs/results.md)."""
    contrastive_temperature: float = 0.3
    """Temperature of that loss (Gunel et al.'s 0.3)."""
    lr_schedule: str = "linear"
    """"linear" (decay to 0 over the BP epochs, after warm-up), "constant", or
    "linear_per_epoch" (warm-up and decay to 0 within every epoch, restarting at the peak: the
    schedule of ``eft tune``, whose run stopped after any epoch k equals a k-epoch run)."""
    max_grad_norm: float = 1.0
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int = 128
    pooling: str = "cls"
    """Sentence feature: "cls" (first token, as the paper), "mean" (masked mean), or
    "cls_last4" (first-token vectors of the last 4 layers, concatenated)."""
    n_hidden: int = 1000
    C: float = 1.0
    activation: str = "leaky_relu"
    n_iter: int = 1
    class_weight: str | dict | None = None
    tune_thresholds: bool = False
    """Multi-label: choose each label's decision threshold on the validation texts, the one
    that maximises that label's F1 there (:func:`eft.calibration.fit_label_thresholds`),
    instead of 0.5 on the I-ELM's outputs (0 on the baseline's logits). Needs validation
    data; labels without a positive validation text keep the fixed threshold."""
    standardize: bool = False
    """Centre and scale the features before the I-ELM's projection, by the mean and standard
    deviation of every training text's features: in-memory data keeps its features for the
    two reads this takes, a stream (``fit_stream``) is passed through the encoder twice. In
    fused mode, from the first ``IELMClassifier.batch_size`` texts of the last BP epoch."""
    elm_from_last_epoch: bool = False
    """Fused mode: accumulate the I-ELM statistics from the last BP epoch's forward passes
    (detached, dropout on, weights still moving) and skip the separate feedforward pass."""
    fused_fraction: float = 1.0
    """Fused mode: the share of the last BP epoch, its final steps, whose forward passes feed
    the I-ELM statistics; the samples of its earlier steps, seen by a less trained encoder,
    are passed through the final encoder afterwards (eval mode), a pass over
    ``1 - fused_fraction`` of the training set. 1.0 makes no feature pass. At k = 1 (five
    datasets, three seeds), 1.0 scored 0.57 points below the non-fused head on average and
    0.5 0.18 below (benchmarks/results/fused_k1_summary.md). In-memory training data only."""
    feature_cache: bool = False
    """Keep the training features in memory (only used by n_iter > 1, which re-reads them)."""
    early_stopping_patience: int | None = None
    """method="bp": stop after this many epochs without a better validation score."""
    checkpoint_dir: str | None = None
    """Save the BP state after every epoch here, for ``resume_from`` after an interruption."""
    seed: int = 42
    device: str = "auto"
    mixed_precision: str = "auto"
    """"auto" = bf16 on a GPU that supports it, else no; or "no", "bf16", "fp16". "bf16" on
    a CPU made the feature pass 1.6-1.8x faster on one AVX512-BF16 CPU (AMD EPYC; MELD 24.9 s
    -> 14.3 s) and 1.5x slower on another (Intel Xeon): time it with benchmarks/bf16_pass.py."""
    inference_precision: str = "same"
    """Autocast of the eval-mode passes only (the feature pass of steps 6-7, validation,
    prediction): "same" (as ``mixed_precision``), "auto", "no", "bf16" or "fp16". "bf16" with
    ``mixed_precision="no"`` keeps the BP epochs in float32 and runs the feature pass in bf16:
    on one 2-core AVX512-BF16 CPU that pass took 0.56-0.62 of the time, on another 1.5x as long
    (README; benchmarks/bf16_pass.py measures it on yours)."""
    trust_remote_code: bool = False
    flops: bool = False
    """Count FLOPs per phase with torch.utils.flop_counter (slower; paper Table 7)."""
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fill_default_learning_rate()
        self.validate()

    def _fill_default_learning_rate(self) -> None:
        # remembered (not a field) so that replace(method=...) gives the new method's default
        self._default_learning_rate = self.learning_rate is None
        if self.learning_rate is None and self.method in DEFAULT_LEARNING_RATE:
            self.learning_rate = DEFAULT_LEARNING_RATE[self.method]

    def replace(self, checked: bool = True, **changes: Any) -> EFTConfig:
        """A new config with ``changes`` (fields by name); this one is not modified. A
        learning rate left at its default follows a changed ``method``: ``EFTConfig()
        .replace(method="bp")`` fine-tunes at 5e-5, as ``EFTConfig(method="bp")`` does.

        ``checked=False`` leaves the values unchecked (names are checked) until
        :meth:`validate`: scikit-learn's ``set_params`` sets and ``fit`` checks, so that
        ``GridSearchCV`` scores an invalid combination ``error_score`` and goes on, and
        fields that depend on each other may be set one at a time. ``learning_rate=None``
        is the method's default."""
        values = {**self.to_dict(), **changes}
        if self._default_learning_rate and "learning_rate" not in changes:
            values["learning_rate"] = None
        if checked:
            return EFTConfig.from_dict(values)
        _refuse_unknown_fields(values)
        config = EFTConfig.__new__(EFTConfig)
        config.__dict__.update(values)
        config._fill_default_learning_rate()  # an unknown method keeps None, refused by fit
        return config

    def _check_kinds(self) -> None:
        def named(field: str, kind: str) -> InputError:
            value = getattr(self, field)
            return InputError(
                f"Invalid EFT configuration: {field} must be {kind}, got {value!r} "
                f"({type(value).__name__})."
            )

        for name in _INTEGER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise named(name, "an integer")
        for name in _NUMBER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise named(name, "a number")
        for name in _BOOLEAN_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise named(name, "true or false")
        for name in _STRING_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise named(name, "a string")
        for name in ("model", "checkpoint_dir"):
            if not isinstance(getattr(self, name), str | type(None)):
                raise named(name, "a path (a string) or null")
        patience = self.early_stopping_patience
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 1
        ):
            raise named("early_stopping_patience", "an integer >= 1 or null (no early stopping)")
        if not isinstance(self.class_weight, str | dict | type(None)):
            raise named("class_weight", 'null, "balanced" or an object {label: weight}')
        if not isinstance(self.extra, dict):
            raise named("extra", "an object")

    def validate(self) -> None:
        """Raise InputError naming the first bad field."""
        self._check_kinds()
        checks = [
            (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"),
            (self.bp_epochs >= 0, "bp_epochs must be >= 0"),
            (
                isinstance(self.learning_rate, numbers.Real)
                and not isinstance(self.learning_rate, bool)
                and self.learning_rate > 0,
                "learning_rate must be a number > 0",
            ),
            (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1"),
            (self.max_length >= 2, "max_length must be >= 2"),
            (self.pooling in POOLINGS, f"pooling must be one of {POOLINGS}, got {self.pooling!r}"),
            (self.n_hidden >= 1, "n_hidden must be >= 1"),
            (0 < self.C < float("inf"), "C must be a finite number > 0"),
            (self.n_iter >= 1, "n_iter must be >= 1"),
            (isinstance(self.tune_thresholds, bool), "tune_thresholds must be true or false"),
            (
                isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device) is not None,
                f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}",
            ),
            (
                self.lr_schedule in LR_SCHEDULES,
                f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}",
            ),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.contrastive_weight < 1, "contrastive_weight must be in [0, 1)"),
            (self.contrastive_temperature > 0, "contrastive_temperature must be > 0"),
            (
                isinstance(self.layer_lr_decay, int | float) and 0 < self.layer_lr_decay <= 1,
                f"layer_lr_decay must be in (0, 1], got {self.layer_lr_decay!r}",
            ),
            (
                self.mixed_precision in MIXED_PRECISION,
                f"mixed_precision must be one of {MIXED_PRECISION}",
            ),
            (
                self.inference_precision in ("same", *MIXED_PRECISION),
                f"inference_precision must be one of {('same', *MIXED_PRECISION)}",
            ),
            (
                not (self.method == "bp" and self.bp_epochs == 0),
                'method="bp" needs bp_epochs >= 1',
            ),
            (
                isinstance(self.fused_fraction, int | float) and 0 < self.fused_fraction <= 1,
                f"fused_fraction must be in (0, 1], got {self.fused_fraction!r}",
            ),
            (
                self.elm_from_last_epoch or self.fused_fraction == 1,
                "fused_fraction applies to fused mode only: set elm_from_last_epoch=True "
                "(--fused) or leave fused_fraction at 1",
            ),
            (
                not (self.elm_from_last_epoch and self.bp_epochs == 0),
                "elm_from_last_epoch (fused mode) needs bp_epochs >= 1",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"Invalid EFT configuration: {message}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EFTConfig:
        _refuse_unknown_fields(values)
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> EFTConfig:
        """The config in a JSON file: its fields, or a ``{"config": {...}}`` document (a saved
        model's ``eft_config.json``, ``eft tune``'s ``tuned_config.json``)."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"Cannot read configuration {path}: {error}") from error
        if isinstance(values, dict) and isinstance(values.get("config"), dict):
            values = values["config"]
        if not isinstance(values, dict):
            raise InputError(
                f"Configuration {path} must hold a JSON object of EFT fields, e.g. "
                f'{{"bp_epochs": 1, "n_hidden": 1000}}; it holds a {type(values).__name__}.'
            )
        return cls.from_dict(values)


def _refuse_unknown_fields(values: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(EFTConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(
            f"Unknown EFT configuration field(s): {', '.join(unknown)}. "
            f"Valid fields: {', '.join(sorted(known))}."
        )
