"""Property-based tests of the I-ELM head (hypothesis): random shapes, dtypes, class counts."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eft.ielm import IELMClassifier

shapes = st.tuples(
    st.integers(min_value=2, max_value=60),  # samples
    st.integers(min_value=1, max_value=12),  # features
    st.integers(min_value=1, max_value=80),  # hidden nodes
    st.integers(min_value=2, max_value=6),  # classes
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=shapes,
    dtype=st.sampled_from(["float64", "float32", "float16", "bfloat16"]),
    log_c=st.floats(min_value=-8, max_value=8),
    activation=st.sampled_from(["leaky_relu", "relu", "sigmoid", "tanh", "gelu", "identity"]),
    seed=st.integers(min_value=0, max_value=2**16),
)
# found by hypothesis: outputs closer than exp's rounding made predict_proba's argmax differ
@example(shape=(13, 2, 1, 2), dtype="float64", log_c=0.0, activation="sigmoid", seed=0)
def test_head_is_finite_and_consistent(shape, dtype, log_c, activation, seed):
    n, d, nh, k = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-2, 2)
    y = np.arange(n) % k  # every class present when n >= k
    if n < k:
        k = n
        y = np.arange(n)
    if dtype == "bfloat16":
        features = torch.from_numpy(X).to(torch.bfloat16)
    else:
        features = X.astype(dtype)
    model = IELMClassifier(n_hidden=nh, C=10.0**log_c, activation=activation, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ill-conditioned cases warn by design
        model.fit(features, y)
        scores = model.decision_function(features)
        proba = model.predict_proba(features)
        predicted = model.predict(features)
    assert model.gamma_.dtype == torch.float64
    assert np.isfinite(model.output_weights_.numpy()).all()
    assert np.isfinite(scores).all() and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert set(np.unique(predicted)) <= set(range(k))
    np.testing.assert_array_equal(model.classes_[proba.argmax(1)], predicted)
    # Gamma is symmetric positive semi-definite
    gamma = model.gamma_.numpy()
    np.testing.assert_allclose(gamma, gamma.T, atol=1e-8 * max(1.0, np.abs(gamma).max()))
    assert np.linalg.eigvalsh(gamma).min() > -1e-6 * max(1.0, np.abs(gamma).max())


@settings(max_examples=25, deadline=None)
@given(
    n_chunks=st.integers(min_value=1, max_value=7),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_chunking_never_changes_the_statistics(n_chunks, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((70, 5))
    y = rng.integers(0, 3, 70)
    y[:3] = [0, 1, 2]
    whole = IELMClassifier(n_hidden=16, random_state=seed).fit(X, y)
    parts = IELMClassifier(n_hidden=16, random_state=seed)
    for Xc, yc in zip(np.array_split(X, n_chunks), np.array_split(y, n_chunks), strict=True):
        parts.partial_fit(Xc, yc, classes=[0, 1, 2])
    np.testing.assert_allclose(parts.gamma_.numpy(), whole.gamma_.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(parts.predict(X), whole.predict(X))


def test_softmax_keeps_the_argmax_of_near_ties():
    from eft.ielm import softmax_keeping_argmax

    low = torch.tensor(0.3, dtype=torch.float64)
    high = torch.nextafter(low, torch.tensor(1.0, dtype=torch.float64))  # one ulp above
    scores = torch.stack([torch.stack([low, high]), torch.stack([high, low])])
    assert torch.softmax(scores, 1)[0, 0] == torch.softmax(scores, 1)[0, 1]  # a rounding tie
    proba = softmax_keeping_argmax(scores)
    assert proba.argmax(1).tolist() == scores.argmax(1).tolist()
    np.testing.assert_allclose(proba.sum(1).numpy(), 1.0, rtol=1e-12)
