"""Iterative Extreme Learning Machine head (paper Appendix A-B, Eq. 1-9).

The module has three layers, in the manner of scikit-learn's ridge module:

* pure functions on tensors: :func:`random_hidden_layer`, :func:`hidden_layer`,
  :func:`accumulate_statistics` (with :func:`add_gram`), :func:`solve_output_weights`;
* :class:`IELMClassifier`, a scikit-learn classifier built on them, that fits in memory
  (:meth:`~IELMClassifier.fit`), by chunks (:meth:`~IELMClassifier.partial_fit`) or from a
  re-iterable stream of batches (:meth:`~IELMClassifier.fit_batches`);
* :func:`sweep`, which scores a grid of ``n_hidden`` x ``C`` from one pass over the data.

Notes
-----
Rows are samples here (``X`` is ``n x d``), the transpose of the paper's column convention.
With input weights ``W`` (nh x d), bias ``b`` and activation ``g``, the hidden layer is
``H = g(X W^T + b)`` (Eq. 1). Targets ``T`` are one-hot rows in {0, 1}. The ridge ELM of
Huang et al. (2012) (Eq. 4-5) is::

    U = Lambda (I/C + Gamma)^-1,   Lambda = T^T H = sum_s t_s h_s^T   (Eq. 6)
                                   Gamma  = H^T H = sum_s h_s h_s^T   (Eq. 7)

Both statistics are sums over samples, so they stream in bounded memory, add across
processes with an all-reduce, and are accumulated in float64 whatever the feature dtype.
``I/C + Gamma`` is symmetric positive definite for ``C > 0``; we solve
``(I/C + Gamma) U^T = Lambda^T`` with a Cholesky factorisation (nh^3/3 flops) and never form an
inverse. When rounding makes the matrix indefinite (huge ``C``, duplicated hidden units) we fall
back to a symmetric eigen-solve that drops directions with non-positive eigenvalues.

Iterations (Appendix B, Eq. 8-9): after a solve, the training samples the model still gets
wrong are added once more, ``Lambda += T_w^T H_w`` and ``Gamma += H_w^T H_w``, and the head is
re-solved. Each iteration costs one pass over the training data. We stop when the training score
of a new solve does not improve on the previous one, and keep the better solve.

Sample and class weights multiply each sample's contribution (weighted ELM: rows of ``H`` and
``T`` scaled by ``sqrt(w)``).
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score, f1_score
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from eft.atomic import atomic_file, json_default

__all__ = [
    "ACTIVATIONS",
    "IELMClassifier",
    "SweepResult",
    "accumulate_statistics",
    "add_gram",
    "hidden_layer",
    "random_hidden_layer",
    "solve_output_weights",
    "sweep",
]

HEAD_FORMAT = "eft-ielm-head"
# features, one-hot targets, sample weights
EncodedBatch = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]
HEAD_FORMAT_VERSION = 1

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    # The authors' head: an untrained PReLU, i.e. a leaky ReLU with slope 0.5.
    "leaky_relu": lambda x: F.leaky_relu(x, 0.5),
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": F.gelu,
    "identity": lambda x: x,
}


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None) means CUDA when available, else CPU; any other torch device as
    given, but CUDA only where torch sees a GPU (an error that says so, not torch's assert)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device {device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was asked for, but torch {torch.__version__} sees no CUDA GPU; "
            "use device 'cpu' or 'auto'."
        )
    return resolved


def random_hidden_layer(
    n_hidden: int, n_features: int, random_state: int | np.random.RandomState | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the random input weights ``W`` (nh x d) and bias ``b`` (nh) of Eq. 1.

    ``W`` has orthonormal rows when ``nh <= d`` and orthonormal columns otherwise (QR of a
    Gaussian matrix with the signs fixed by ``diag(R)``, so the draw is unique for a seed). As in
    the authors' head, ``b`` is uniform on [0, 1) scaled to unit norm.
    """
    rng = check_random_state(random_state)
    tall = rng.standard_normal((max(n_hidden, n_features), min(n_hidden, n_features)))
    # torch's QR: numpy's runs on its own BLAS thread pool, which is erratic when contended.
    q, r = torch.linalg.qr(torch.from_numpy(tall))
    q = (q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)).numpy()
    weights = q.T if n_hidden <= n_features else q
    bias = rng.uniform(0.0, 1.0, size=n_hidden)
    bias /= max(np.linalg.norm(bias), np.finfo(np.float64).tiny)
    return np.ascontiguousarray(weights), bias


# In-place versions, so that a streamed fit can reuse one buffer for every batch.
_ACTIVATIONS_INPLACE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "leaky_relu": lambda x: F.leaky_relu_(x, 0.5),
    "relu": torch.relu_,
    "sigmoid": torch.sigmoid_,
    "tanh": torch.tanh_,
    "identity": lambda x: x,
}


def hidden_layer(
    X: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor,
    activation: str,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 1: ``H = g(X W^T + b)``, in the dtype of ``weights`` (into ``out`` when given)."""
    X = X.to(weights.dtype)
    if out is None:
        return ACTIVATIONS[activation](torch.addmm(bias, X, weights.T))
    torch.addmm(bias, X, weights.T, out=out)
    if activation in _ACTIVATIONS_INPLACE:
        return _ACTIVATIONS_INPLACE[activation](out)
    return out.copy_(ACTIVATIONS[activation](out))


def _keeps_checks_on_device(X: torch.Tensor) -> bool:
    """Whether per-batch input checks of ``X`` are deferred to one read per pass: on an
    accelerator, reading a check's result would synchronise the host with every batch."""
    return X.device.type != "cpu"


def accumulate_statistics(
    H: torch.Tensor,
    T: torch.Tensor,
    gamma: torch.Tensor,
    lambda_: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> None:
    """Add one batch to ``Lambda`` (Eq. 6) and ``Gamma`` (Eq. 7) in place, in their dtype.

    ``workspace`` (at least ``H``'s shape, in ``gamma``'s dtype) receives the converted ``H``
    instead of a new allocation.
    """
    if workspace is not None and H.dtype != gamma.dtype:
        H = workspace[: H.shape[0]].copy_(H)
    H = H.to(gamma.dtype)
    T = T.to(gamma.dtype)
    if sample_weight is not None:
        root = sample_weight.to(gamma.dtype).sqrt().unsqueeze(1)
        H = H * root
        T = T * root
    add_gram(gamma, H)
    lambda_.addmm_(T.T, H)


# Below this many hidden units or rows one product is faster than the blocks and the copies.
_GRAM_BLOCKS_MIN_HIDDEN = 256
_GRAM_BLOCKS_MIN_ROWS = 128
_GRAM_BLOCKS = 4


def add_gram(gamma: torch.Tensor, H: torch.Tensor) -> None:
    """``gamma += H^T H`` in place, for a symmetric ``gamma`` (Eq. 7's update).

    Notes
    -----
    ``H^T H`` is symmetric, so only its block lower triangle is computed: with ``b`` column
    blocks, block row ``i`` is one product ``H_i^T H_{:i}``, ``(b + 1) / (2b)`` of the flops of
    the full product (5/8 for ``b = 4``), and the strictly upper blocks are then copied from their
    transposes. On this 2-core CPU, copies included, that made the update 1.2-1.6x faster than
    one ``addmm`` for 1,024 and 4,096 rows (nh 500-4000; benchmarks/results/bench_ielm.md,
    part d) and up to 1.3x for 128 rows; below 128 rows the copies cost more than they save,
    so one product is used. BLAS's ``syrk`` would halve the flops, but torch does not expose
    it and scipy's runs on a second thread pool that slowed the encoder's next steps here.
    ``gamma`` stays symmetric after every call, so every reader of it (solves, ``sweep``'s
    leading blocks, all-reduce, save) sees a full matrix.
    """
    nh = gamma.shape[0]
    if nh < _GRAM_BLOCKS_MIN_HIDDEN or H.shape[0] < _GRAM_BLOCKS_MIN_ROWS:
        gamma.addmm_(H.T, H)
        return
    edges = [nh * i // _GRAM_BLOCKS for i in range(_GRAM_BLOCKS + 1)]
    for start, stop in itertools.pairwise(edges):
        gamma[start:stop, :stop].addmm_(H[:, start:stop].T, H[:, :stop])
    for start, stop in itertools.pairwise(edges[1:]):
        gamma[:start, start:stop].copy_(gamma[start:stop, :start].T)


def solve_output_weights(
    gamma: torch.Tensor, lambda_: torch.Tensor, C: float, warn: bool = True
) -> torch.Tensor:
    """Eq. 5: ``U = Lambda (I/C + Gamma)^-1`` by Cholesky, eigen-solve as fall-back.

    Returns ``U`` with shape (n_outputs, nh) in the dtype of ``gamma``.
    """
    system = gamma.clone()
    system.diagonal().add_(1.0 / C)
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        if warn:
            # A cheap lower bound of the condition number: lambda_max >= max(diag(A)) and
            # >= ||A||_F / sqrt(nh); lambda_min <= the smallest Cholesky pivot diag(L)^2.
            largest = max(float(system.diagonal().max()), float(system.norm()) / len(system) ** 0.5)
            condition = largest / float(factor.diagonal().min()) ** 2
            if condition > 1e12:
                warnings.warn(
                    f"I-ELM system (I/C + Gamma) is ill-conditioned (condition number >= "
                    f"{condition:.1e}); the head may be inaccurate. Lower C or n_hidden.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return torch.cholesky_solve(lambda_.T, factor).T
    return _eigen_solve(system, lambda_, warn)


def _eigen_solve(system: torch.Tensor, lambda_: torch.Tensor, warn: bool) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(system)
    cutoff = values.abs().max() * system.shape[0] * torch.finfo(system.dtype).eps
    keep = values > cutoff
    if warn:
        warnings.warn(
            f"I-ELM system (I/C + Gamma) is not numerically positive definite; solved by an "
            f"eigen-decomposition keeping {int(keep.sum())} of {len(values)} directions. "
            f"Lower C or n_hidden.",
            RuntimeWarning,
            stacklevel=3,
        )
    inverse_values = torch.where(keep, 1.0 / values.clamp_min(cutoff), torch.zeros_like(values))
    return ((lambda_ @ vectors) * inverse_values) @ vectors.T


def softmax_keeping_argmax(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Row-wise ``softmax(scores / temperature)`` whose argmax is always the scores' argmax.

    Scores closer than the rounding of ``exp`` (or of the division) give equal probabilities,
    and ``argmax`` would then pick the first; the top class is raised by one ulp there, so
    that ``predict_proba`` and ``predict`` agree in every case.
    """
    proba = torch.softmax(scores / temperature if temperature != 1.0 else scores, dim=1)
    top = scores.argmax(1)
    rows = torch.nonzero(proba.argmax(1) != top).flatten()
    if len(rows):
        highest = proba[rows].max(1).values
        proba[rows, top[rows]] = torch.nextafter(highest, torch.full_like(highest, 2.0))
    return proba


# ----------------------------------------------------------------------------------------------
# The estimator
# ----------------------------------------------------------------------------------------------


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _saved_class_weight(saved: Any, classes: np.ndarray) -> Any:
    """``class_weight`` as :meth:`IELMClassifier.save` wrote it: ``[label, weight]`` pairs, or
    (older saves) a dict whose JSON keys are the labels as strings, mapped back to ``classes``."""
    if isinstance(saved, list):
        return {label: weight for label, weight in saved}
    if isinstance(saved, dict):
        by_name = {str(c): c.item() for c in classes}
        return {by_name.get(k, k): weight for k, weight in saved.items()}
    return saved


class IELMClassifier(ClassifierMixin, BaseEstimator):
    """Iterative Extreme Learning Machine classifier (paper Appendix A-B).

    Parameters
    ----------
    n_hidden : int, default=1000
        Number of hidden nodes ``nh``.
    C : float, default=1.0
        Inverse ridge strength of Eq. 4-5; larger ``C`` means less regularisation.
    activation : {"leaky_relu", "relu", "sigmoid", "tanh", "gelu", "identity"}
        Activation ``g`` of Eq. 1; ``leaky_relu`` has slope 0.5, as the authors' head.
    n_iter : int, default=1
        Number of solves. Values above 1 run the misclassified-sample updates of Eq. 8-9, one
        pass over the training data each, stopping early when the training score stops rising.
        On fine-tuned MiniLM features (MELD, IMDb, TREC-6) they raised the training accuracy
        and lowered the test score (docs/results.md), so 1 is the default.
    class_weight : None, "balanced" or dict
        Per-class weights (weighted ELM). "balanced" uses ``n / (n_classes * count)``; it needs
        all labels up front, so it is refused by :meth:`partial_fit` (pass a dict instead).
    standardize : bool, default=False
        Centre and scale features before the projection, by the mean and standard deviation
        of every training row: :meth:`fit` uses the whole ``X``, :meth:`fit_batches` and
        :func:`sweep` make a pass of their own over the batches first (a one-shot iterator,
        which cannot be read twice, and :meth:`partial_fit` use the first batch).
    batch_size : int, default=4096
        Rows projected at once; bounds the memory of :meth:`fit` and of predictions.
        :meth:`fit_batches` joins smaller batches into chunks of this many rows.
    device : str, default="cpu"
        Where the statistics live and the solve runs: "cpu", "cuda", "cuda:1" or "auto".
    random_state : int, RandomState or None
        Seed for ``W`` and ``b``.

    Attributes
    ----------
    classes_ : ndarray
        Class labels (for multi-label ``y``, the label column indices).
    input_weights_ : torch.Tensor (nh, d)
    bias_ : torch.Tensor (nh,)
    output_weights_ : torch.Tensor (n_outputs, nh), float64
    gamma_ : torch.Tensor (nh, nh), float64
    lambda_ : torch.Tensor (n_outputs, nh), float64
    n_samples_seen_ : int
    n_features_in_ : int
    n_iter_ : int
        Solves kept (1 unless ``n_iter > 1``).
    train_scores_ : list of float
        Training accuracy of each evaluated solve (only when ``n_iter > 1``).
    mean_, scale_ : torch.Tensor or None
        Feature standardisation, when ``standardize=True``.

    Fitted tensors live on ``device``; call ``.cpu().numpy()`` for numpy copies.
    """

    def __init__(
        self,
        n_hidden: int = 1000,
        C: float = 1.0,
        activation: str = "leaky_relu",
        n_iter: int = 1,
        class_weight: None | str | dict = None,
        standardize: bool = False,
        batch_size: int = 4096,
        device: str = "cpu",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_hidden = n_hidden
        self.C = C
        self.activation = activation
        self.n_iter = n_iter
        self.class_weight = class_weight
        self.standardize = standardize
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    # -- scikit-learn plumbing -----------------------------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.allow_nan = False
        return tags

    def _check_params(self) -> None:
        if not isinstance(self.n_hidden, (int, np.integer)) or self.n_hidden < 1:
            raise ValueError(f"n_hidden must be an integer >= 1, got {self.n_hidden!r}.")
        if not isinstance(self.C, (int, float, np.number)) or not (
            0 < _as_float(self.C) < math.inf
        ):
            raise ValueError(f"C must be a finite number > 0, got {self.C!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}."
            )
        if not isinstance(self.n_iter, (int, np.integer)) or self.n_iter < 1:
            raise ValueError(f"n_iter must be an integer >= 1, got {self.n_iter!r}.")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}.")
        if not (
            self.class_weight is None
            or self.class_weight == "balanced"
            or isinstance(self.class_weight, dict)
        ):
            raise ValueError(
                f"class_weight must be None, 'balanced' or a dict, got {self.class_weight!r}."
            )

    def _check_class_weight_labels(self) -> None:
        """A ``class_weight`` key that names no class (a typo, a string for an int label) is
        refused, as scikit-learn refuses it, instead of weighting nothing."""
        if not isinstance(self.class_weight, dict) or self._multilabel:
            return
        unknown = [k for k in self.class_weight if k not in set(self.classes_.tolist())]
        if unknown:
            raise ValueError(
                f"class_weight names labels that are not classes: {unknown[:10]}; the classes "
                f"are {self.classes_.tolist()[:20]}."
            )

    def _device(self) -> torch.device:
        return resolve_device(self.device)

    # -- input checks ---------------------------------------------------------------------------

    def _check_X(self, X: Any, reset: bool, defer_finite: bool = False) -> torch.Tensor:
        """Validate features; returns a tensor on CPU (numpy input) or on its own device.

        With ``defer_finite``, the NaN/inf test of an accelerator tensor is folded into a
        device-side flag that :meth:`_raise_if_non_finite` reads once per pass.
        """
        if isinstance(X, torch.Tensor):
            X = X.detach()  # features are data, also straight from a module outside no_grad
            if X.ndim != 2:
                raise ValueError(
                    f"Expected a 2-D array of features (n_samples, n_features), got shape "
                    f"{tuple(X.shape)}."
                )
            if not X.is_floating_point():
                X = X.float()
            if X.shape[0] == 0:
                raise ValueError("Found array with 0 sample(s); at least 1 is required.")
            # any NaN or inf makes the sum non-finite: a cheap test first, the full one if needed
            if defer_finite and _keeps_checks_on_device(X):  # no sum: fp16 sums overflow
                finite = torch.isfinite(X).all()
                flag = getattr(self, "_finite_flag", None)
                self._finite_flag = finite if flag is None else flag & finite
            elif not bool(torch.isfinite(X.sum())) and not bool(torch.isfinite(X).all()):
                raise ValueError(
                    "Input X contains NaN or infinity. Check the feature extractor (fp16 "
                    "overflow?) or drop those rows."
                )
            n_features = X.shape[1]
            if reset:
                self.n_features_in_ = n_features
            elif n_features != self.n_features_in_:
                raise ValueError(
                    f"X has {n_features} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
            return X
        X = validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32, np.float16],
            ensure_all_finite=True,
        )
        return torch.from_numpy(np.array(X, copy=True))

    def _check_y(self, y: Any) -> np.ndarray:
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        y = _to_numpy(y)
        y = check_array(y, ensure_2d=False, dtype=None, ensure_all_finite=True)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn(
                "A column-vector y was passed when a 1d array was expected. Please change the "
                "shape of y to (n_samples,), for example using ravel().",
                DataConversionWarning,
                stacklevel=3,
            )
            y = y.ravel()
        if y.ndim == 2:
            if not np.isin(y, (0, 1)).all():
                raise ValueError(
                    "A 2-D y is read as a multi-label indicator matrix and must hold only 0 and 1."
                )
        elif y.ndim != 1:
            raise ValueError(f"y must be 1-D labels or a 2-D 0/1 indicator, got shape {y.shape}.")
        check_classification_targets(y)
        return y

    def _targets(self, y: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """One-hot (or indicator) targets T and the class index of every sample."""
        if self._multilabel:
            if y.ndim != 2 or y.shape[1] != len(self.classes_):
                raise ValueError(
                    f"This model was fitted on {len(self.classes_)} labels (multi-label); "
                    f"got y of shape {y.shape}."
                )
            return torch.from_numpy(y.astype(np.float64)), np.zeros(len(y), dtype=np.int64)
        if y.ndim != 1:
            raise ValueError("This model was fitted on 1-D labels; got a 2-D y.")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains labels unknown to the model: {unknown.tolist()[:10]}; known "
                f"classes are {self.classes_.tolist()[:20]}. Pass every class in `classes` "
                f"on the first call of partial_fit."
            )
        index = np.searchsorted(self.classes_, y)
        T = torch.zeros((len(y), len(self.classes_)), dtype=torch.float64)
        T[torch.arange(len(y)), torch.from_numpy(index)] = 1.0
        return T, index

    def _sample_weights(
        self, index: np.ndarray, sample_weight: Any, y: np.ndarray, require_positive: bool = True
    ) -> torch.Tensor | None:
        weights = None
        if self.class_weight is not None and not self._multilabel:
            if self.class_weight == "balanced":
                counts = np.bincount(index, minlength=len(self.classes_)).astype(np.float64)
                per_class = np.where(counts > 0, len(y) / (len(self.classes_) * counts), 0.0)
            else:
                per_class = np.array([float(self.class_weight.get(c, 1.0)) for c in self.classes_])
            weights = per_class[index]
        if sample_weight is not None:
            sample_weight = _checked_sample_weight(sample_weight, len(y))
            if require_positive and len(y) and not sample_weight.any():
                raise ValueError("Sample weights are all zero; at least one must be positive.")
            weights = sample_weight if weights is None else weights * sample_weight
        return None if weights is None else torch.from_numpy(np.asarray(weights, np.float64))

    # -- state ----------------------------------------------------------------------------------

    def _weighted_moments(
        self, X: torch.Tensor, sample_weight: Any
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With ``standardize`` and sample weights, the weighted mean and scale of ``X``, as
        ``StandardScaler`` weighs them; else None (``_start`` takes ``X``'s own)."""
        if not self.standardize or sample_weight is None:
            return None
        weights = _checked_sample_weight(sample_weight, X.shape[0])
        return feature_moments([(X, weights)], self._device())

    def _start(
        self,
        n_features: int,
        X_first: torch.Tensor | None,
        moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Draw the random layer and zero the statistics; with ``standardize``, centre and
        scale by ``moments`` (the mean and scale of every row), else by ``X_first``'s."""
        device = self._device()
        weights, bias = random_hidden_layer(self.n_hidden, n_features, self.random_state)
        # Project in float64 when the features are float64, else in float32.
        dtype = (
            torch.float64
            if X_first is not None and X_first.dtype == torch.float64
            else (torch.float32)
        )
        self.input_weights_ = torch.from_numpy(weights).to(device=device, dtype=dtype)
        self.bias_ = torch.from_numpy(bias).to(device=device, dtype=dtype)
        self.mean_ = self.scale_ = None
        if self.standardize and moments is None and X_first is not None:
            moments = feature_moments([(X_first,)], device)  # partial_fit: the first batch's
        if self.standardize and moments is not None:
            self.mean_, self.scale_ = (m.to(device=device, dtype=dtype) for m in moments)
        n_outputs = len(self.classes_)
        self.gamma_ = torch.zeros(
            (self.n_hidden, self.n_hidden), dtype=torch.float64, device=device
        )
        self.lambda_ = torch.zeros((n_outputs, self.n_hidden), dtype=torch.float64, device=device)
        self.n_samples_seen_ = 0
        self.n_iter_ = 0
        self.train_scores_ = []
        self._needs_solve = True

    def _hidden(self, X: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        X = X.to(device=self.input_weights_.device, dtype=self.input_weights_.dtype)
        if self.mean_ is not None:
            X = (X - self.mean_) / self.scale_
        return hidden_layer(X, self.input_weights_, self.bias_, self.activation, out=out)

    def _workspace(self, max_rows: int | None = None) -> dict[str, torch.Tensor]:
        """Buffers for one chunk's hidden layer, reused across the chunks of a pass: allocating
        them per batch fragments glibc's heap, and peak memory then creeps up with N."""
        rows = (min(self.batch_size, max_rows or self.batch_size), self.n_hidden)
        W = self.input_weights_
        space = {"hidden": torch.empty(rows, dtype=W.dtype, device=W.device)}
        if W.dtype != self.gamma_.dtype:
            space["converted"] = torch.empty(rows, dtype=self.gamma_.dtype, device=W.device)
        return space

    def _chunks(
        self, X: torch.Tensor, *others: torch.Tensor | None
    ) -> Iterator[tuple[torch.Tensor | None, ...]]:
        for start in range(0, X.shape[0], self.batch_size):
            stop = start + self.batch_size
            yield (X[start:stop], *(o if o is None else o[start:stop] for o in others))

    def _accumulate(
        self,
        X: torch.Tensor,
        T: torch.Tensor,
        w: torch.Tensor | None,
        workspace: dict[str, torch.Tensor] | None = None,
    ) -> None:
        device = self.gamma_.device
        workspace = workspace if workspace is not None else self._workspace(X.shape[0])
        for Xc, Tc, wc in self._chunks(X, T, w):
            H = self._hidden(Xc, out=workspace["hidden"][: Xc.shape[0]])
            accumulate_statistics(
                H,
                Tc.to(device),
                self.gamma_,
                self.lambda_,
                None if wc is None else wc.to(device),
                workspace=workspace.get("converted"),
            )
        self.n_samples_seen_ += int(X.shape[0])
        self._needs_solve = True

    def _solve(self) -> None:
        self.output_weights_ = solve_output_weights(self.gamma_, self.lambda_, float(self.C))
        self._needs_solve = False
        self._buffers = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_buffers", None)  # scratch space, not model state
        state.pop("_finite_flag", None)
        return state

    def _ensure_solved(self) -> None:
        check_is_fitted(self, "gamma_")
        if getattr(self, "_needs_solve", False) or not hasattr(self, "output_weights_"):
            self._solve()
            self.n_iter_ = max(self.n_iter_, 1)

    # -- fitting --------------------------------------------------------------------------------

    def _set_classes(self, y: np.ndarray, classes: Any = None) -> None:
        self._multilabel = y.ndim == 2
        if self._multilabel:
            self.classes_ = np.arange(y.shape[1])
            return
        self.classes_ = np.unique(_to_numpy(classes) if classes is not None else y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; got only one class "
                f"({self.classes_.tolist()}). Classifier can't train when only one class is "
                f"present."
            )

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> IELMClassifier:
        """Fit on in-memory features ``X`` (n, d) and labels ``y`` (n,) or indicators (n, L)."""
        self._check_params()
        Xt = self._check_X(X, reset=True)
        y = self._check_y(y)
        if len(y) != Xt.shape[0]:
            raise ValueError(f"X has {Xt.shape[0]} samples but y has {len(y)}.")
        self._set_classes(y)
        self._check_class_weight_labels()
        T, index = self._targets(y)
        w = self._sample_weights(index, sample_weight, y)
        if w is not None and not self._multilabel:
            mass = np.bincount(index, weights=w.numpy(), minlength=len(self.classes_))
            if (mass > 0).sum() < 2:
                raise ValueError(
                    "After sample_weight and class_weight, fewer than 2 classes have positive "
                    "weight; a classifier needs at least 2 classes."
                )
        self._start(Xt.shape[1], Xt, self._weighted_moments(Xt, sample_weight))
        self._accumulate(Xt, T, w)
        self._solve()
        self.n_iter_ = 1
        if self.n_iter > 1:
            self._iterate(lambda: iter([(Xt, T, w)]), all_reduce=False)
        return self

    def partial_fit(
        self,
        X: Any,
        y: Any,
        classes: Any = None,
        sample_weight: Any = None,
        check_input: bool = True,
    ) -> IELMClassifier:
        """Add a chunk to ``Lambda`` and ``Gamma``; the solve runs lazily before predicting.

        ``classes`` (every label that will ever be seen) is required on the first call, as in
        scikit-learn, unless ``y`` is a 2-D multi-label indicator. Invalid input raises and
        leaves the model unchanged. Each call updates all of ``Gamma`` (nh x nh): pass chunks
        of hundreds of rows or more, or use :meth:`fit_batches`, which joins small batches.

        ``check_input=False`` (for trusted callers, as scikit-learn's ``check_input``): after
        the first call, ``X`` is taken to be a finite float tensor with ``n_features_in_``
        columns and ``y`` a tensor of class indices into ``classes_`` (no ``sample_weight``),
        both on the model's device; nothing is copied to the host, so a GPU stream is not
        synchronised per call.
        """
        first = not hasattr(self, "gamma_")
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise ValueError(  # also after fit: a chunk's own counts would weight it
                "class_weight='balanced' needs all labels up front and is not supported by "
                "partial_fit; pass a dict (sklearn.utils.class_weight.compute_class_weight)."
            )
        if not check_input and not first and not self._multilabel and sample_weight is None:
            return self._partial_fit_trusted(X, y)
        if first:
            self._check_params()
        Xt = self._check_X(X, reset=first)
        y = self._check_y(y)
        if len(y) != Xt.shape[0]:
            raise ValueError(f"X has {Xt.shape[0]} samples but y has {len(y)}.")
        if first:
            if classes is None and y.ndim == 1:
                raise ValueError(
                    "classes must be passed on the first call to partial_fit (every label that "
                    "the stream will contain)."
                )
            self._set_classes(y, classes)
            self._check_class_weight_labels()
        elif classes is not None and not self._multilabel:
            given = np.unique(_to_numpy(classes))
            if not np.array_equal(given, self.classes_):  # as scikit-learn's SGDClassifier
                raise ValueError(
                    f"classes={given.tolist()} is not the same as on the first call to "
                    f"partial_fit ({self.classes_.tolist()}); a fitted model's labels are fixed."
                )
        T, index = self._targets(y)  # raises on unknown labels before anything changes
        w = self._sample_weights(index, sample_weight, y)
        if first:
            self._start(Xt.shape[1], Xt, self._weighted_moments(Xt, sample_weight))
        # one set of buffers for all partial_fit calls until the next solve (see _workspace)
        buffers = getattr(self, "_buffers", None)
        if buffers is None or buffers["hidden"].shape[0] < min(self.batch_size, Xt.shape[0]):
            self._buffers = self._workspace(Xt.shape[0])
        self._accumulate(Xt, T, w, self._buffers)
        return self

    def _partial_fit_trusted(self, X: torch.Tensor, y: Any) -> IELMClassifier:
        device = self.gamma_.device
        index = torch.as_tensor(y, device=device).long()
        T = torch.nn.functional.one_hot(index, len(self.classes_)).to(torch.float64)
        buffers = getattr(self, "_buffers", None)
        if buffers is None or buffers["hidden"].shape[0] < min(self.batch_size, X.shape[0]):
            self._buffers = buffers = self._workspace(X.shape[0])
        w = None
        if self.class_weight is not None:
            if "class_weights" not in buffers:
                buffers["class_weights"] = torch.tensor(
                    [float(self.class_weight.get(c, 1.0)) for c in self.classes_],
                    dtype=torch.float64,
                ).to(device)
            w = buffers["class_weights"][index]
        X = X if X.is_floating_point() else X.float()
        self._accumulate(X, T, w, buffers)
        return self

    def fit_batches(
        self,
        batches: Iterable[tuple[Any, Any]] | Callable[[], Iterable[tuple[Any, Any]]],
        classes: Any = None,
        all_reduce: bool = False,
    ) -> IELMClassifier:
        """Fit from a stream of ``(X, y)`` or ``(X, y, sample_weight)`` batches, in memory
        bounded by one batch (smaller batches are joined into chunks of ``batch_size`` rows).

        ``batches`` is a re-iterable (list, DataLoader) or a function returning a fresh
        iterator; ``n_iter > 1`` makes one extra pass per iteration. ``classes`` lists every
        label; without it, every label must occur in the stream and is discovered as it goes.
        With ``all_reduce=True`` (inside ``torch.distributed``), every rank passes its shard and
        the statistics are summed across ranks, giving exactly the single-process head.
        """
        self._check_params()
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' needs all labels up front; pass a dict computed from "
                "the labels (sklearn.utils.class_weight.compute_class_weight)."
            )
        if all_reduce and classes is None:
            raise ValueError("all_reduce=True needs `classes`, so that every rank agrees on them.")
        make_iter = _pass_factory(batches, self.n_iter)
        moments = _standardization_pass(self, batches, make_iter, all_reduce)
        self._accumulate_stream(make_iter(), classes, all_reduce, moments)
        self._solve()
        self.n_iter_ = 1
        if self.n_iter > 1:
            self._iterate(lambda: self._encoded(make_iter()), all_reduce=all_reduce)
        return self

    def _accumulate_stream(
        self,
        batches: Iterable[tuple[Any, Any]],
        classes: Any,
        all_reduce: bool,
        moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """One pass: fresh random layer and statistics from every batch (no solve);
        ``moments``: the standardisation of :func:`feature_moments`."""
        for attr in ("gamma_", "output_weights_"):
            if hasattr(self, attr):
                delattr(self, attr)
        workspace = None
        self._finite_flag = None
        # Small batches (a feature pass yields eval batches of ~64 rows) are joined into chunks
        # of up to batch_size rows: one rank-4096 update of Gamma costs far less than 64
        # rank-64 ones, each of which reads and writes all of Gamma.
        pending: list[EncodedBatch] = []
        pending_rows = 0

        def flush() -> None:
            nonlocal pending, pending_rows, workspace
            if pending:
                workspace = workspace or self._workspace()
                self._accumulate(*_concatenate(pending), workspace)
                pending, pending_rows = [], 0

        for batch in batches:
            X, y, sample_weight = _unpack_batch(batch)
            first = not hasattr(self, "gamma_")
            Xt = self._check_X(X, reset=first, defer_finite=True)
            y = self._check_y(y)
            if first:
                if classes is None and y.ndim == 1:
                    self._multilabel = False
                    self.classes_ = np.unique(y)
                else:
                    self._set_classes(y, classes)
                self._start(Xt.shape[1], Xt, moments)
                if all_reduce:
                    self._broadcast_random_layer()
            if classes is None and not self._multilabel and np.setdiff1d(y, self.classes_).size:
                flush()  # the pending targets have the old classes' columns
                self._grow_classes(y)
            T, index = self._targets(y)
            w = self._sample_weights(index, sample_weight, y, require_positive=False)
            if pending_rows + len(y) > self.batch_size:
                flush()
            if len(y) < self.batch_size:
                # Held back, so copies: the caller may refill the same buffers for its next
                # batch, and a view (a CLS-pooled feature) would keep its hidden states alive.
                Xt = Xt.to(self.input_weights_.device, copy=isinstance(X, torch.Tensor))
                w = None if w is None else w.clone()
            pending.append((Xt, T, w))  # a batch of batch_size rows or more is flushed at once
            pending_rows += len(y)
            if pending_rows >= self.batch_size:
                flush()
        flush()
        if not hasattr(self, "gamma_"):
            raise ValueError("fit_batches got no batches.")
        self._check_class_weight_labels()  # the labels are known now (also those discovered)
        self._raise_if_non_finite()
        if all_reduce:
            self.all_reduce_statistics()
        if len(self.classes_) < 2 and not self._multilabel:
            raise ValueError(
                f"Classifier can't train when only one class is present (saw only "
                f"{self.classes_.tolist()}); a classifier needs at least 2 classes."
            )

    def _raise_if_non_finite(self) -> None:
        flag, self._finite_flag = getattr(self, "_finite_flag", None), None
        if flag is not None and not bool(flag):
            raise ValueError(
                "Input X contains NaN or infinity (in a batch of the stream). Check the feature "
                "extractor (fp16 overflow?) or drop those rows."
            )

    def _encoded(
        self, batches: Iterable[tuple[Any, Any]]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        for batch in batches:
            X, y, sample_weight = _unpack_batch(batch)
            Xt = self._check_X(X, reset=False)
            y = self._check_y(y)
            T, index = self._targets(y)
            yield Xt, T, self._sample_weights(index, sample_weight, y, require_positive=False)

    def _grow_classes(self, y: np.ndarray) -> None:
        """Add rows of Lambda for labels not seen before (their past targets were all 0)."""
        new = np.setdiff1d(np.unique(y), self.classes_)
        if not new.size:
            return
        merged = np.union1d(self.classes_, new)
        grown = torch.zeros(
            (len(merged), self.n_hidden), dtype=self.lambda_.dtype, device=self.lambda_.device
        )
        grown[torch.from_numpy(np.searchsorted(merged, self.classes_))] = self.lambda_
        self.classes_, self.lambda_ = merged, grown

    # -- iterations (Eq. 8-9) -------------------------------------------------------------------

    def _iterate(
        self,
        make_batches: Callable[
            [], Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
        ],
        all_reduce: bool,
    ) -> None:
        """Re-solve with the misclassified samples added again (Appendix B, steps 4-8)."""
        best = None
        for solve in range(1, self.n_iter + 1):
            last = solve == self.n_iter
            d_gamma, d_lambda, correct, total = self._misclassified_statistics(
                make_batches(), collect=not last
            )
            if all_reduce:
                counts = torch.tensor([correct, total], dtype=torch.float64, device=d_gamma.device)
                _all_reduce_sum(d_gamma, d_lambda, counts)
                correct, total = float(counts[0]), float(counts[1])
            score = correct / max(total, 1.0)
            self.train_scores_.append(score)
            if best is not None and score <= best[0]:
                _, self.gamma_, self.lambda_, self.output_weights_ = best
                self.n_iter_ = solve - 1
                return
            self.n_iter_ = solve
            if last or correct == total:
                return
            best = (score, self.gamma_.clone(), self.lambda_.clone(), self.output_weights_)
            self.gamma_ += d_gamma
            self.lambda_ += d_lambda
            self._solve()

    def _misclassified_statistics(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
        collect: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        d_gamma = torch.zeros_like(self.gamma_)
        d_lambda = torch.zeros_like(self.lambda_)
        correct = total = 0.0
        U = self.output_weights_
        for X, T, w in batches:
            for Xc, Tc, wc in self._chunks(X, T, w):
                H = self._hidden(Xc)
                Tc = Tc.to(U.device)
                scores = H.to(U.dtype) @ U.T
                if self._multilabel:
                    wrong = ((scores > 0.5) != (Tc > 0.5)).any(1)
                else:
                    wrong = scores.argmax(1) != Tc.argmax(1)
                total += len(wrong)
                correct += float((~wrong).sum())
                if collect and bool(wrong.any()):
                    accumulate_statistics(
                        H[wrong],
                        Tc[wrong],
                        d_gamma,
                        d_lambda,
                        None if wc is None else wc.to(U.device)[wrong],
                    )
        return d_gamma, d_lambda, correct, total

    # -- distributed ----------------------------------------------------------------------------

    def all_reduce_statistics(self) -> IELMClassifier:
        """Sum ``Gamma``, ``Lambda`` and the sample count over all ``torch.distributed`` ranks."""
        count = torch.tensor(
            [float(self.n_samples_seen_)], dtype=torch.float64, device=self.gamma_.device
        )
        _all_reduce_sum(self.gamma_, self.lambda_, count)
        self.n_samples_seen_ = int(count.item())
        self._needs_solve = True
        return self

    def _broadcast_random_layer(self) -> None:
        for tensor in (self.input_weights_, self.bias_, self.mean_, self.scale_):
            if tensor is not None:
                _broadcast(tensor)

    # -- prediction -----------------------------------------------------------------------------

    def _outputs(self, X: Any) -> torch.Tensor:
        self._ensure_solved()
        Xt = self._check_X(X, reset=False)
        U = self.output_weights_.to(self.input_weights_.dtype)
        parts = [self._hidden(Xc) @ U.T for (Xc,) in self._chunks(Xt)]
        return torch.cat(parts).double()

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw outputs ``H U^T`` (n, n_outputs); for two classes, ``o_1 - o_0`` (n,)."""
        outputs = self._outputs(X).cpu().numpy()
        if len(self.classes_) == 2 and not self._multilabel:
            return outputs[:, 1] - outputs[:, 0]
        return outputs

    def predict(self, X: Any) -> np.ndarray:
        """Class of the largest output (multi-label: every output above 0.5)."""
        outputs = self._outputs(X).cpu().numpy()
        if self._multilabel:
            return (outputs > 0.5).astype(np.int64)
        return self.classes_[outputs.argmax(1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the outputs: same argmax as :meth:`predict`, not calibrated.

        Multi-label: each output clipped into the open interval (0, 1). Wrap in
        ``CalibratedClassifierCV`` for calibrated probabilities.
        """
        outputs = self._outputs(X)
        if self._multilabel:
            eps = 1e-7
            return outputs.clamp(eps, 1.0 - eps).cpu().numpy()
        return softmax_keeping_argmax(outputs).cpu().numpy()

    # -- export and persistence -----------------------------------------------------------------

    def to_module(self, dtype: torch.dtype = torch.float32) -> torch.nn.Sequential:
        """The head as ``Linear(W, b) -> g -> Linear(U)`` (standardisation folded into W, b)."""
        self._ensure_solved()
        W = self.input_weights_.double()
        b = self.bias_.double()
        if self.mean_ is not None:
            W = W / self.scale_.double()
            b = b - W @ self.mean_.double()
        hidden = torch.nn.Linear(W.shape[1], W.shape[0])
        output = torch.nn.Linear(W.shape[0], self.output_weights_.shape[0], bias=False)
        with torch.no_grad():
            hidden.weight.copy_(W)
            hidden.bias.copy_(b)
            output.weight.copy_(self.output_weights_)
        return torch.nn.Sequential(hidden, Activation(self.activation), output).to(
            device=self.input_weights_.device, dtype=dtype
        )

    def save(self, path: str | os.PathLike) -> None:
        """Write one safetensors file (tensors + JSON metadata), atomically; no pickle."""
        self._ensure_solved()
        tensors = {
            "input_weights": self.input_weights_,
            "bias": self.bias_,
            "output_weights": self.output_weights_,
            "gamma": self.gamma_,
            "lambda": self.lambda_,
        }
        if self.mean_ is not None:
            tensors.update(mean=self.mean_, scale=self.scale_)
        params = self.get_params()
        seed = params["random_state"]  # a RandomState cannot be saved; a numpy integer can
        params["random_state"] = int(seed) if isinstance(seed, numbers.Integral) else None
        if isinstance(params["class_weight"], dict):  # JSON keys are strings: keep the labels'
            params["class_weight"] = [[k, w] for k, w in params["class_weight"].items()]
        metadata = {
            "format": HEAD_FORMAT,
            "format_version": HEAD_FORMAT_VERSION,
            "params": params,
            "classes": self.classes_.tolist(),
            "classes_dtype": self.classes_.dtype.str,
            "multilabel": bool(self._multilabel),
            "n_features_in": int(self.n_features_in_),
            "n_samples_seen": int(self.n_samples_seen_),
            "n_iter": int(self.n_iter_),
        }
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        with atomic_file(path) as staging:
            save_file(
                tensors, staging, metadata={"eft": json.dumps(metadata, default=json_default)}
            )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> IELMClassifier:
        """Read a head written by :meth:`save`; ``device`` overrides the saved one."""
        from safetensors import safe_open

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No I-ELM head file at {path!r}.")
        try:
            with safe_open(path, framework="pt") as handle:
                raw = (handle.metadata() or {}).get("eft")
            tensors = load_file(path)
        except SafetensorError as error:
            raise ValueError(
                f"{path!r} is damaged (not a readable safetensors file: {error})."
            ) from None
        if raw is None:
            raise ValueError(f"{path!r} is a safetensors file but not an eft I-ELM head.")
        try:
            meta = json.loads(raw)
            version = (meta.get("format"), meta.get("format_version"))
        except (ValueError, AttributeError) as error:
            raise ValueError(f"{path!r}: its eft metadata is damaged ({error}).") from None
        if version != (HEAD_FORMAT, HEAD_FORMAT_VERSION):
            raise ValueError(
                f"{path!r} has head format {version[0]!r} version {version[1]!r}; this eft "
                f"reads {HEAD_FORMAT!r} version {HEAD_FORMAT_VERSION}."
            )
        try:
            params = dict(meta["params"])
            classes = np.array(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
            params["class_weight"] = _saved_class_weight(params.get("class_weight"), classes)
            if device is not None:
                params["device"] = device
            if not torch.cuda.is_available() and str(params.get("device", "cpu")).startswith(
                "cuda"
            ):
                params["device"] = "cpu"
            model = cls(**params)
            model._check_params()
            n_features = int(meta["n_features_in"])
            multilabel = meta["multilabel"]
            counts = (int(meta["n_samples_seen"]), int(meta["n_iter"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path!r}: its eft metadata is damaged ({error}).") from None
        _check_saved_head(path, tensors, model.n_hidden, n_features, len(classes))
        target = model._device()
        tensors = {k: v.to(target) for k, v in tensors.items()}
        model.input_weights_ = tensors["input_weights"]
        model.bias_ = tensors["bias"]
        model.output_weights_ = tensors["output_weights"]
        model.gamma_ = tensors["gamma"]
        model.lambda_ = tensors["lambda"]
        model.mean_ = tensors.get("mean")
        model.scale_ = tensors.get("scale")
        model.classes_ = classes
        model._multilabel = bool(multilabel)
        model.n_features_in_ = n_features
        model.n_samples_seen_, model.n_iter_ = counts
        model.train_scores_ = []
        model._needs_solve = False
        return model


def _check_saved_head(
    path: str, tensors: dict[str, torch.Tensor], n_hidden: int, n_features: int, n_classes: int
) -> None:
    """A saved head's tensors: each one there, of its shape, float32/64 and finite (a file
    changed after its save is refused here, not at the first prediction)."""
    shapes = {
        "input_weights": (n_hidden, n_features),
        "bias": (n_hidden,),
        "output_weights": (n_classes, n_hidden),
        "gamma": (n_hidden, n_hidden),
        "lambda": (n_classes, n_hidden),
    }
    if ("mean" in tensors) != ("scale" in tensors):
        raise ValueError(f"{path!r} is damaged: it holds one of 'mean' and 'scale' only.")
    if "mean" in tensors:
        shapes.update(mean=(n_features,), scale=(n_features,))
    for name, shape in shapes.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise ValueError(f"{path!r} is damaged: the tensor {name!r} is missing.")
        if tuple(tensor.shape) != shape or tensor.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"{path!r} is damaged: {name!r} is {tuple(tensor.shape)} {tensor.dtype}, but "
                f"the head's metadata ({n_hidden} hidden units, {n_features} features, "
                f"{n_classes} classes) needs {shape} float32 or float64."
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{path!r} is damaged: {name!r} holds NaN or infinite values.")


class Activation(torch.nn.Module):
    """An activation of :data:`ACTIVATIONS` as a module (for export and TorchScript)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.name](x)

    def extra_repr(self) -> str:
        return self.name


def _all_reduce_sum(*tensors: torch.Tensor) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def _as_float(value: Any) -> float:
    """``float(value)``; inf for an integer too large for a float (``C=10**400``)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _checked_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray:
    """A batch's sample weights as float64, one finite non-negative weight per sample."""
    weights = np.asarray(_to_numpy(sample_weight), dtype=np.float64).reshape(-1)
    if weights.shape[0] != n_samples:
        raise ValueError(f"sample_weight has {weights.shape[0]} entries for {n_samples} samples.")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("sample_weight must be finite and non-negative.")
    return weights


def _standardization_pass(
    model: IELMClassifier,
    batches: Iterable[Any] | Callable[[], Iterable[Any]],
    make_iter: Callable[[], Iterator[Any]],
    all_reduce: bool,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """With ``standardize``, the mean and scale of every row of ``batches``, from a pass of
    their own (None without ``standardize``, or for a one-shot iterator, which can be read
    once only: its first batch standardises, as in :meth:`IELMClassifier.partial_fit`)."""
    if not model.standardize:
        return None
    if not callable(batches) and iter(batches) is batches:  # type: ignore[arg-type]
        return None

    def checked() -> Iterator[tuple[Any, Any]]:  # the batches' own checks first
        for batch in make_iter():
            X, y, sample_weight = _unpack_batch(batch)
            X = model._check_X(X, reset=True, defer_finite=True)
            if sample_weight is not None:  # their messages too
                sample_weight = _checked_sample_weight(sample_weight, len(X))
            yield X, sample_weight

    return feature_moments(checked(), model._device(), all_reduce)


def feature_moments(
    batches: Iterable[Any], device: str | torch.device = "cpu", all_reduce: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (float64, population; 1 where a feature is constant) of the
    features of every ``(X,)`` or ``(X, sample_weight)`` batch (weighted, as scikit-learn's
    ``StandardScaler`` weighs them; None: 1 per row), accumulated about the first batch's
    mean so that features far from 0 keep their precision; summed across ranks with
    ``all_reduce``."""
    shift: torch.Tensor | None = None
    total = first = square = None
    for batch in batches:
        X = batch[0] if isinstance(batch, (tuple, list)) else batch
        X = X.detach() if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
        X = X.to(device=device, dtype=torch.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"Expected 2-D batches of features, got shape {tuple(X.shape)}.")
        weights = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        if shift is None:
            shift = X.mean(0)
            if all_reduce:  # one shift for every rank, so that the sums add up
                _broadcast(shift)
            total = torch.zeros(1, dtype=torch.float64, device=shift.device)
            first, square = torch.zeros_like(shift), torch.zeros_like(shift)
        centred = X - shift
        if weights is None:
            first += centred.sum(0)
            square += (centred * centred).sum(0)
            total += X.shape[0]
        else:
            w = torch.as_tensor(weights, dtype=torch.float64, device=X.device).reshape(-1, 1)
            first += (w * centred).sum(0)
            square += (w * centred * centred).sum(0)
            total += w.sum()
    if shift is None:
        raise ValueError("fit_batches got no batches.")
    if all_reduce:
        _all_reduce_sum(first, square, total)
    mean_offset = first / total
    std = (square / total - mean_offset * mean_offset).clamp_min(0).sqrt()
    return shift + mean_offset, torch.where(std > 0, std, torch.ones_like(std))


def _broadcast(tensor: torch.Tensor) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tensor, src=0)


def _concatenate(batches: Sequence[EncodedBatch]) -> EncodedBatch:
    """Join encoded batches row-wise; a batch without weights counts with weight 1."""
    if len(batches) == 1:
        return batches[0]
    weights = None
    if any(w is not None for _, _, w in batches):
        weights = torch.cat(
            [torch.ones(len(T), dtype=torch.float64) if w is None else w for _, T, w in batches]
        )
    X = torch.cat([X for X, _, _ in batches])
    return X, torch.cat([T for _, T, _ in batches]), weights


def _unpack_batch(batch: Any) -> tuple[Any, Any, Any]:
    """A stream's batch: ``(X, y)`` or ``(X, y, sample_weight)``."""
    if not isinstance(batch, tuple | list) or len(batch) not in (2, 3):
        raise ValueError(
            "Each batch of a stream must be a tuple (X, y) or (X, y, sample_weight), got "
            f"{type(batch).__name__}"
            + (f" of length {len(batch)}." if hasattr(batch, "__len__") else ".")
        )
    return batch[0], batch[1], batch[2] if len(batch) == 3 else None


def _pass_factory(
    batches: Iterable[Any] | Callable[[], Iterable[Any]], n_iter: int
) -> Callable[[], Iterator[Any]]:
    if callable(batches) and not hasattr(batches, "__iter__"):
        return lambda: iter(batches())
    if iter(batches) is batches and n_iter > 1:
        raise TypeError(
            "n_iter > 1 needs one pass over the data per iteration, but `batches` is a one-shot "
            "iterator; pass a list, a DataLoader or a function returning a fresh iterator."
        )
    return lambda: iter(batches)


# ----------------------------------------------------------------------------------------------
# One-pass tuning of n_hidden and C
# ----------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """Validation scores for every (n_hidden, C) and the best head, fitted."""

    table: list[dict[str, float]]
    best_params: dict[str, float]
    best_estimator: IELMClassifier
    scoring: str
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scoring": self.scoring,
            "best_params": self.best_params,
            "table": self.table,
            "seconds": self.seconds,
        }


def check_sweep_grid(
    n_hidden: Sequence[int], C: Sequence[float], scoring: str
) -> tuple[list[int], list[float]]:
    """The sorted, distinct sizes and strengths of a :func:`sweep`; ValueError if any is
    invalid (as ``scoring``, which must be "accuracy" or "weighted_f1")."""
    if scoring not in ("accuracy", "weighted_f1"):
        raise ValueError(f"scoring must be 'accuracy' or 'weighted_f1', got {scoring!r}.")
    try:
        sizes = sorted({int(n) for n in n_hidden})
        strengths = sorted({float(c) for c in C})
    except (TypeError, ValueError) as error:
        raise ValueError(f"n_hidden and C must hold numbers: {error}") from error
    if not sizes or sizes[0] < 1 or any(int(n) != n for n in n_hidden):
        raise ValueError(f"n_hidden values must be integers >= 1, got {list(n_hidden)}.")
    if not strengths or strengths[0] <= 0 or not math.isfinite(strengths[-1]):
        raise ValueError(f"C values must be finite and > 0, got {list(C)}.")
    return sizes, strengths


def sweep(
    train_batches: Iterable[tuple[Any, Any]] | Callable[[], Iterable[tuple[Any, Any]]],
    X_val: Any,
    y_val: Any,
    n_hidden: Sequence[int] = (250, 500, 1000, 2000),
    C: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0),
    *,
    activation: str = "leaky_relu",
    class_weight: dict | None = None,
    standardize: bool = False,
    classes: Any = None,
    scoring: str = "accuracy",
    device: str = "cpu",
    random_state: int | np.random.RandomState | None = None,
    all_reduce: bool = False,
) -> SweepResult:
    """Score every ``n_hidden`` x ``C`` on validation data from ONE pass over the training data.

    ``train_batches`` yields ``(X, y)`` or ``(X, y, sample_weight)``, as for
    :meth:`IELMClassifier.fit_batches`.

    Notes
    -----
    ``W`` and ``b`` are drawn once for the largest ``nh``; a smaller ``nh`` uses their leading
    rows, so its ``Gamma`` and ``Lambda`` are the leading block and leading columns of the
    largest ones. The leading block of a Cholesky factor is the factor of the leading block,
    so ONE factorisation of ``I/C + Gamma`` per ``C`` (nh^3/3 flops) serves every ``nh`` with
    two triangular solves each. Validation hidden units are computed once for the largest nh.
    Scores: accuracy and weighted F1; ``scoring`` picks the best (ties: smaller nh, then smaller
    C). The best estimator holds the leading blocks, with ``n_iter=1``.
    """
    import time

    sizes, strengths = check_sweep_grid(n_hidden, C, scoring)
    clock = time.perf_counter()
    full = IELMClassifier(
        n_hidden=sizes[-1],
        C=strengths[0],
        activation=activation,
        class_weight=class_weight,
        standardize=standardize,
        device=device,
        random_state=random_state,
    )
    full._check_params()
    if isinstance(class_weight, str) and class_weight == "balanced":
        raise ValueError(
            "class_weight='balanced' needs all labels up front; pass a dict computed from the "
            "labels (sklearn.utils.class_weight.compute_class_weight)."
        )
    make_iter = _pass_factory(train_batches, 1)
    moments = _standardization_pass(full, train_batches, make_iter, all_reduce)
    full._accumulate_stream(make_iter(), classes, all_reduce, moments)
    seconds = {"pass": time.perf_counter() - clock}

    clock = time.perf_counter()
    y_val = full._check_y(y_val)
    H_val = torch.cat([full._hidden(Xc) for (Xc,) in full._chunks(full._check_X(X_val, False))])
    H_val = H_val.to(torch.float64)
    table: list[dict[str, float]] = []
    solutions: dict[tuple[int, float], torch.Tensor] = {}
    system = torch.empty_like(full.gamma_)
    for c in strengths:
        system.copy_(full.gamma_)
        system.diagonal().add_(1.0 / c)
        factor, info = torch.linalg.cholesky_ex(system)
        # L z = Lambda^T once; the leading nh rows of z solve the leading nh block's system.
        forward = torch.linalg.solve_triangular(factor, full.lambda_.T, upper=False)
        for nh in sizes:
            lam = full.lambda_[:, :nh]
            if int(info) == 0 or int(info) > nh:  # the leading nh block is positive definite
                U = torch.linalg.solve_triangular(factor[:nh, :nh].mT, forward[:nh], upper=True).T
            else:
                U = _eigen_solve(system[:nh, :nh], lam, warn=False)
            solutions[(nh, c)] = U
            outputs = (H_val[:, :nh] @ U.T).cpu().numpy()
            if full._multilabel:
                predicted = (outputs > 0.5).astype(np.int64)
            else:
                predicted = full.classes_[outputs.argmax(1)]
            table.append(
                {
                    "n_hidden": nh,
                    "C": c,
                    "accuracy": float(accuracy_score(y_val, predicted)),
                    "weighted_f1": float(
                        f1_score(y_val, predicted, average="weighted", zero_division=0)
                    ),
                }
            )
    best = max(table, key=lambda row: (row[scoring], -row["n_hidden"], -row["C"]))
    nh, c = int(best["n_hidden"]), float(best["C"])
    best_model = IELMClassifier(
        n_hidden=nh,
        C=c,
        activation=activation,
        class_weight=class_weight,
        standardize=standardize,
        device=device,
        random_state=random_state,
    )
    for name in ("classes_", "_multilabel", "n_features_in_", "n_samples_seen_", "mean_", "scale_"):
        setattr(best_model, name, getattr(full, name))
    best_model.input_weights_ = full.input_weights_[:nh].clone()
    best_model.bias_ = full.bias_[:nh].clone()
    best_model.gamma_ = full.gamma_[:nh, :nh].clone()
    best_model.lambda_ = full.lambda_[:, :nh].clone()
    best_model.output_weights_ = solutions[(nh, c)]
    best_model.n_iter_ = 1
    best_model.train_scores_ = []
    best_model._needs_solve = False
    seconds["solve_and_score"] = time.perf_counter() - clock
    return SweepResult(
        table=table,
        best_params={"n_hidden": nh, "C": c},
        best_estimator=best_model,
        scoring=scoring,
        seconds=seconds,
    )
