"""Temperature scaling of the I-ELM head's outputs (after the paper's Algorithm 1).

The I-ELM solves a ridge regression onto one-hot targets (Eq. 5-6), so its outputs sit near
0 and 1 and their softmax is far too flat: a text the head is sure of gets a "probability" of
about e / (e + K - 1), 0.35 with six classes. A fine-tuned linear head, trained with
cross-entropy, gives softmax scores that users threshold on. Temperature scaling (Guo et
al., 2017, "On Calibration of Modern Neural Networks") divides the outputs by one scalar T
fitted on held-out data by minimising the negative log-likelihood:

    T* = argmin_T  -1/n sum_i log softmax(o_i / T)[y_i]

It changes no prediction (T > 0 keeps the argmax), costs one 1-D minimisation on outputs the
fit already computed for its validation score, and is the usual baseline among calibration
methods. Without held-out data nothing is fitted: the training outputs of a ridge solve are
optimistic, and T fitted on them would be too small.

Multi-label heads solve onto 0/1 rows and predict a label whose output passes 0.5; their
probabilities are ``sigmoid((o - 0.5) / T)``, with T fitted by the binary cross-entropy in the
same way (the same threshold, so again no prediction changes). Optionally each label's
threshold is chosen on the held-out data first (:func:`fit_label_thresholds`); that one does
change predictions, and T is then fitted around the chosen thresholds.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

#: The search interval of log10(T): I-ELM outputs need T of about 0.05-0.5, logits about 1.
LOG10_TEMPERATURE_BOUNDS = (-3.0, 2.0)


def negative_log_likelihood(
    scores: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> float:
    """Mean -log softmax(scores / temperature)[label]; ``labels`` are column indices."""
    scores = np.asarray(scores, dtype=np.float64)
    log_proba = log_softmax(scores / temperature, axis=1)
    return float(-log_proba[np.arange(len(labels)), np.asarray(labels)].mean())


def binary_negative_log_likelihood(
    scores: np.ndarray,
    targets: np.ndarray,
    temperature: float = 1.0,
    threshold: float | np.ndarray = 0.0,
) -> float:
    """Multi-label: mean over texts and labels of the binary cross-entropy of
    ``sigmoid((scores - threshold) / temperature)`` against the 0/1 ``targets`` (``threshold``:
    one for every label, or one per label)."""
    z = (np.asarray(scores, dtype=np.float64) - threshold) / temperature
    targets = np.asarray(targets, dtype=np.float64)
    # -log sigmoid(z) = logaddexp(0, -z), -log(1 - sigmoid(z)) = logaddexp(0, z)
    return float((targets * np.logaddexp(0, -z) + (1 - targets) * np.logaddexp(0, z)).mean())


def fit_temperature(
    scores: np.ndarray, labels: np.ndarray, threshold: float | np.ndarray | None = None
) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(scores / T)`` on ``labels``.

    ``scores``: (n, n_classes) outputs on held-out data; ``labels``: their column indices.
    Multi-label (``labels`` a 0/1 indicator of the shape of ``scores``, and a ``threshold``:
    the output at which a label is predicted): the T of ``sigmoid((scores - threshold) / T)``
    and the binary cross-entropy, which keeps every prediction too.
    A bounded search over log10(T) in :data:`LOG10_TEMPERATURE_BOUNDS` (the NLL is smooth in
    log T). Where every held-out text is classified right with a margin the NLL keeps falling
    with T towards 0, and T is unreliable: a RuntimeWarning says so.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    multi_label = labels.ndim == 2
    if (
        scores.ndim != 2
        or len(scores) != len(labels)
        or len(labels) == 0
        or (multi_label and (labels.shape != scores.shape or threshold is None))
    ):
        raise ValueError(
            f"scores must be (n, n_classes) with one label per row (multi-label: a 0/1 row "
            f"and a threshold); got {scores.shape} scores and labels of shape {labels.shape}."
        )

    def objective(log10_t: float) -> float:
        if multi_label:
            return binary_negative_log_likelihood(scores, labels, 10.0**log10_t, threshold)
        return negative_log_likelihood(scores, labels, 10.0**log10_t)

    result = minimize_scalar(
        objective, bounds=LOG10_TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-4}
    )
    low, high = LOG10_TEMPERATURE_BOUNDS
    kind = "sigmoid" if multi_label else "softmax"
    if result.x <= low + 0.01 or result.fun < 1e-4:  # the NLL still falls, or is spent
        why = (
            "every one is classified right with a clear margin"
            if result.fun < 1e-4
            else "the NLL still falls at the smallest T, as where the outputs of the texts "
            "classified wrong are (nearly) tied"
        )
        warnings.warn(
            f"The {kind} temperature fitted on {len(labels)} held-out texts (T = "
            f"{10.0**result.x:.3g}) is unreliable: {why}, so the probabilities will be close "
            f"to 0 and 1. Calibrate on more (or harder) validation data.",
            RuntimeWarning,
            stacklevel=2,
        )
    elif result.x >= high - 0.01:
        warnings.warn(
            f"The {kind} temperature reached the top of its range (T = {10.0**result.x:.3g}) "
            f"on {len(labels)} held-out texts: the outputs carry almost no information about "
            f"the labels.",
            RuntimeWarning,
            stacklevel=2,
        )
    return float(10.0**result.x)


def fit_label_thresholds(scores: np.ndarray, targets: np.ndarray, default: float) -> np.ndarray:
    """Multi-label: each label's decision threshold t_j (predict label j when its score is
    above t_j) that maximises its F1 on held-out texts.

    ``scores``: (n, n_labels) outputs on held-out texts; ``targets``: their 0/1 rows;
    ``default``: the fixed threshold (0.5 for I-ELM outputs, 0 for logits).

    Notes
    -----
    For label j with P > 0 positives, sort its scores in decreasing order, s_(1) >= ... >=
    s_(n). Predicting the first i texts gives F1_i = 2 TP_i / (i + P), where TP_i counts the
    positives among them; every t in [s_(i+1), s_(i)) predicts exactly those (cuts only fall
    between distinct scores). Of the cuts with the highest F1 the one nearest ``default`` is
    taken: ``default`` itself where it lies in that cut's interval (the fixed threshold is kept
    whenever it is already as good), else the middle of the interval, or just below the lowest
    score for the cut that predicts every text. A label without a positive held-out text keeps
    ``default``. Thresholds fitted on few positives overfit them: use enough held-out texts.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape or len(scores) == 0:
        raise ValueError(
            f"scores and targets must be (n, n_labels) of one shape; got {scores.shape} and "
            f"{targets.shape}."
        )
    n = len(scores)
    thresholds = np.full(scores.shape[1], float(default))
    for j in range(scores.shape[1]):
        positives = targets[:, j] == 1
        if not positives.any():
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        ranked, hits = scores[order, j], positives[order]
        f1 = 2 * np.cumsum(hits) / (np.arange(1, n + 1) + hits.sum())
        cut = np.append(ranked[:-1] > ranked[1:], True)  # between distinct scores, or after all
        lower = np.append(ranked[1:], -np.inf)  # the cut after text i: t in [lower, upper)
        upper = ranked
        best = cut & (f1 >= f1[cut].max() - 1e-12)
        if (best & (lower <= default) & (default < upper)).any():
            continue
        spacing = (ranked[0] - ranked[-1]) / n or 1.0
        middle = (np.append(ranked[1:], ranked[-1] - spacing) + upper) / 2
        thresholds[j] = middle[best][np.argmin(np.abs(middle[best] - default))]
    return thresholds


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Confidence-binned |accuracy - confidence|, weighted by bin size (Guo et al., Eq. 3)."""
    proba = np.asarray(proba, dtype=np.float64)
    confidence = proba.max(1)
    correct = proba.argmax(1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)
