"""Tests for eft.ielm: the closed-form I-ELM head (paper Appendix A-B)."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.utils.estimator_checks import check_estimator

from eft.ielm import (
    IELMClassifier,
    add_gram,
    hidden_layer,
    random_hidden_layer,
    solve_output_weights,
    sweep,
)


def _data(n=300, d=20, classes=3, seed=0, flip=0.0):
    X, y = make_classification(
        n_samples=n,
        n_features=d,
        n_informative=min(d, 8),
        n_redundant=0,
        n_classes=classes,
        n_clusters_per_class=1,
        flip_y=flip,
        random_state=seed,
    )
    return X, y


def _reference_hidden(model, X):
    W = model.input_weights_.double().numpy()
    b = model.bias_.double().numpy()
    Z = X @ W.T + b
    return np.where(Z > 0, Z, 0.5 * Z)


def _reference_solution(H, T, C, weights=None):
    """Eq. 4 computed independently: U = T H^T (I/C + H H^T)^-1 (rows are samples here)."""
    if weights is not None:
        H = H * np.sqrt(weights)[:, None]
        T = T * np.sqrt(weights)[:, None]
    nh = H.shape[1]
    return (T.T @ H) @ np.linalg.inv(np.eye(nh) / C + H.T @ H)


@pytest.mark.parametrize("n_hidden", [8, 20, 400])  # nh < d, nh = d, nh > n_samples
def test_output_weights_match_ridge_formula(n_hidden):
    X, y = _data(n=300, d=20)
    X = X[:200] if n_hidden == 400 else X
    y = y[:200] if n_hidden == 400 else y
    model = IELMClassifier(n_hidden=n_hidden, C=0.7, random_state=0).fit(X, y)
    H = _reference_hidden(model, X)
    U = _reference_solution(H, np.eye(3)[y], 0.7)
    got = model.output_weights_.numpy()
    assert got.shape == (3, n_hidden)
    assert np.abs(got - U).max() / np.abs(U).max() < 1e-8
    np.testing.assert_allclose(model.gamma_.numpy(), H.T @ H, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(model.lambda_.numpy(), np.eye(3)[y].T @ H, rtol=1e-10, atol=1e-9)
    assert model.gamma_.dtype == torch.float64


@pytest.mark.parametrize("shape", [(16, 40), (40, 40), (100, 40)])
def test_input_weights_are_orthogonal(shape):
    n_hidden, d = shape
    W, b = random_hidden_layer(n_hidden, d, random_state=3)
    assert W.shape == (n_hidden, d)
    gram = W @ W.T if n_hidden <= d else W.T @ W
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=1e-6)
    assert np.isclose(np.linalg.norm(b), 1.0) and (b >= 0).all()
    X, y = _data(d=d)
    model = IELMClassifier(n_hidden=n_hidden, random_state=3).fit(X, y)
    np.testing.assert_allclose(model.input_weights_.numpy(), W)


def test_partial_fit_equals_fit():
    X, y = _data(n=1000, d=16)
    full = IELMClassifier(n_hidden=64, C=2.0, random_state=1).fit(X, y)
    stream = IELMClassifier(n_hidden=64, C=2.0, random_state=1)
    for Xc, yc in zip(np.array_split(X, 10), np.array_split(y, 10), strict=True):
        stream.partial_fit(Xc, yc, classes=[0, 1, 2])
    assert stream.n_samples_seen_ == 1000
    np.testing.assert_allclose(stream.gamma_.numpy(), full.gamma_.numpy(), rtol=1e-12)
    np.testing.assert_allclose(stream.lambda_.numpy(), full.lambda_.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(stream.predict(X), full.predict(X))
    np.testing.assert_allclose(stream.decision_function(X), full.decision_function(X), rtol=1e-9)


def test_partial_fit_without_input_checks_equals_the_checked_path():
    """check_input=False (eft's fused mode on a GPU): tensors of class indices, no host copy."""
    X, y = _data(n=600, d=16)
    weights = {0: 2.0, 2: 0.5}
    checked = IELMClassifier(n_hidden=48, class_weight=weights, random_state=3)
    trusted = IELMClassifier(n_hidden=48, class_weight=weights, random_state=3)
    for i, (Xc, yc) in enumerate(zip(np.array_split(X, 6), np.array_split(y, 6), strict=True)):
        checked.partial_fit(Xc, yc, classes=[0, 1, 2])
        Xt, yt = torch.from_numpy(Xc).float(), torch.from_numpy(yc)
        trusted.partial_fit(Xt, yt, classes=[0, 1, 2], check_input=i == 0)
    assert trusted.n_samples_seen_ == checked.n_samples_seen_ == 600
    for name in ("gamma_", "lambda_"):  # float32 features against float64 ones
        a, b = getattr(checked, name).numpy(), getattr(trusted, name).numpy()
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.abs(a).max())
    np.testing.assert_array_equal(trusted.predict(X), checked.predict(X))


def test_device_side_finite_check_raises_once_per_pass(monkeypatch):
    """On an accelerator the NaN test of each batch stays on the device and is read once at
    the end of the pass (forced here on the CPU)."""
    import eft.ielm

    monkeypatch.setattr(eft.ielm, "_keeps_checks_on_device", lambda X: True)
    X, y = _data(n=400, d=8)
    batches = [
        (torch.from_numpy(Xc).float(), yc)
        for Xc, yc in zip(np.array_split(X, 4), np.array_split(y, 4), strict=True)
    ]
    deferred = IELMClassifier(n_hidden=16, random_state=0).fit_batches(batches, classes=[0, 1, 2])
    monkeypatch.undo()
    direct = IELMClassifier(n_hidden=16, random_state=0).fit_batches(batches, classes=[0, 1, 2])
    np.testing.assert_array_equal(deferred.gamma_.numpy(), direct.gamma_.numpy())
    monkeypatch.setattr(eft.ielm, "_keeps_checks_on_device", lambda X: True)
    bad = [(Xc.clone(), yc) for Xc, yc in batches]
    bad[2][0][5, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity \\(in a batch of the stream\\)"):
        IELMClassifier(n_hidden=16, random_state=0).fit_batches(bad, classes=[0, 1, 2])
    # finite fp16 features whose fp16 sum overflows (above 65504) are not taken for inf
    half = [(torch.full((64, 768), 2.0, dtype=torch.float16), torch.zeros(64, dtype=int))] * 2
    assert not torch.isfinite(half[0][0].sum())
    IELMClassifier(n_hidden=16, random_state=0).fit_batches(half, classes=[0, 1])


def test_fit_batches_equals_fit_and_discovers_classes():
    X, y = _data(n=600, d=16)
    labels = np.array(["ant", "bee", "cat"])[y]
    batches = list(zip(np.array_split(X, 6), np.array_split(labels, 6), strict=True))
    full = IELMClassifier(n_hidden=32, random_state=0).fit(X, labels)
    stream = IELMClassifier(n_hidden=32, random_state=0).fit_batches(batches)
    assert stream.classes_.tolist() == ["ant", "bee", "cat"]
    np.testing.assert_allclose(stream.lambda_.numpy(), full.lambda_.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(stream.predict(X), full.predict(X))
    # a class that appears only in a later batch
    order = np.argsort(labels, kind="stable")
    late = list(zip(np.array_split(X[order], 6), np.array_split(labels[order], 6), strict=True))
    grown = IELMClassifier(n_hidden=32, random_state=0).fit_batches(late)
    np.testing.assert_allclose(grown.lambda_.numpy(), full.lambda_.numpy(), atol=1e-10)


@pytest.mark.parametrize("n_hidden", [40, 256, 301, 1000])  # plain product, then 4 blocks
def test_add_gram_adds_the_full_symmetric_product(n_hidden):
    rng = np.random.default_rng(n_hidden)
    start = rng.standard_normal((n_hidden, n_hidden))
    start = start + start.T
    H = rng.standard_normal((130, n_hidden))
    gamma = torch.from_numpy(start.copy())
    add_gram(gamma, torch.from_numpy(H))
    add_gram(gamma, torch.from_numpy(H[:5]))  # few rows: one product
    expected = start + H.T @ H + H[:5].T @ H[:5]
    np.testing.assert_allclose(gamma.numpy(), expected, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(gamma.numpy(), gamma.numpy().T, rtol=1e-12, atol=1e-10)


def test_small_stream_batches_are_joined_without_changing_the_head():
    """fit_batches joins batches into chunks of batch_size rows: across chunk borders, with
    weights on some batches only (the others count 1) and a class first seen mid-chunk."""
    X, y = _data(n=500, d=16)
    order = np.argsort(y, kind="stable")  # class 2 first appears in a late batch
    X, y = X[order], y[order]
    w = np.random.default_rng(1).uniform(0.5, 2, size=len(y))
    sizes = [7, 50, 1, 90, 33, 64, 64, 100, 91]
    edges = np.cumsum([0, *sizes])
    batches, weights = [], np.ones(len(y))
    for i, (a, b) in enumerate(itertools.pairwise(edges)):
        if i % 3 == 1:
            batches.append((X[a:b], y[a:b], w[a:b]))
            weights[a:b] = w[a:b]
        else:
            batches.append((X[a:b], y[a:b]))
    full = IELMClassifier(n_hidden=300, random_state=0).fit(X, y, sample_weight=weights)
    stream = IELMClassifier(n_hidden=300, batch_size=150, random_state=0).fit_batches(batches)
    assert stream.n_samples_seen_ == len(y)
    np.testing.assert_allclose(stream.gamma_.numpy(), full.gamma_.numpy(), rtol=1e-10)
    np.testing.assert_allclose(stream.lambda_.numpy(), full.lambda_.numpy(), rtol=1e-10)
    np.testing.assert_array_equal(stream.predict(X), full.predict(X))

    def refilled():  # one buffer for every batch, as a reader of a memory-mapped file may do
        X_buffer = torch.empty(50, X.shape[1], dtype=torch.float64)
        w_buffer = torch.empty(50, dtype=torch.float64)
        for start in range(0, len(y), 50):
            X_buffer.copy_(torch.from_numpy(X[start : start + 50]))
            w_buffer.copy_(torch.from_numpy(w[start : start + 50]))
            yield X_buffer, y[start : start + 50], w_buffer

    weighted = IELMClassifier(n_hidden=300, random_state=0).fit(X, y, sample_weight=w)
    reused = IELMClassifier(n_hidden=300, batch_size=150, random_state=0).fit_batches(refilled)
    np.testing.assert_allclose(reused.gamma_.numpy(), weighted.gamma_.numpy(), rtol=1e-10)
    np.testing.assert_allclose(reused.lambda_.numpy(), weighted.lambda_.numpy(), rtol=1e-10)


def test_weighted_stream_equals_weighted_fit():
    X, y = _data(n=600, d=16, flip=0.1)
    w = np.random.default_rng(3).uniform(0, 2, size=len(y))
    w[:100] = 0.0  # a whole batch of weight 0 is allowed in a stream
    batches = list(
        zip(np.array_split(X, 6), np.array_split(y, 6), np.array_split(w, 6), strict=True)
    )
    for n_iter in (1, 3):
        full = IELMClassifier(n_hidden=32, n_iter=n_iter, random_state=0)
        full.fit(X, y, sample_weight=w)
        stream = IELMClassifier(n_hidden=32, n_iter=n_iter, random_state=0)
        stream.fit_batches(batches, classes=[0, 1, 2])
        np.testing.assert_allclose(stream.gamma_.numpy(), full.gamma_.numpy(), rtol=1e-10)
        np.testing.assert_allclose(stream.lambda_.numpy(), full.lambda_.numpy(), rtol=1e-10)
        assert stream.n_iter_ == full.n_iter_
        np.testing.assert_array_equal(stream.predict(X), full.predict(X))
    # the weights change the head: unweighted statistics differ
    plain = IELMClassifier(n_hidden=32, random_state=0).fit(X, y)
    assert not np.allclose(plain.gamma_.numpy(), full.gamma_.numpy())
    # and the one-pass sweep reads them too
    result = sweep(batches, X, y, n_hidden=[32], C=[1.0], random_state=0)
    np.testing.assert_allclose(
        result.best_estimator.gamma_.numpy(),
        IELMClassifier(n_hidden=32, random_state=0).fit(X, y, sample_weight=w).gamma_.numpy(),
        rtol=1e-10,
    )
    with pytest.raises(ValueError, match=r"\(X, y\) or \(X, y, sample_weight\)"):
        IELMClassifier(n_hidden=8).fit_batches([(X, y, w, w)], classes=[0, 1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        IELMClassifier(n_hidden=8).fit_batches([(X, y, -w)], classes=[0, 1, 2])


def _reference_iterations(X, y, model_first, C, n_iter, n_classes):
    """Appendix B (Eq. 8-9) written out independently, with the stop rule of IELMClassifier."""
    H = _reference_hidden(model_first, X)
    T = np.eye(n_classes)[y]
    gamma, lam = H.T @ H, T.T @ H
    nh = H.shape[1]

    def solve(g, l):
        return l @ np.linalg.inv(np.eye(nh) / C + g)

    U = solve(gamma, lam)
    best = None
    for solve_index in range(1, n_iter + 1):
        wrong = (H @ U.T).argmax(1) != y
        score = 1 - wrong.mean()
        if best is not None and score <= best[0]:
            return best[1], best[2], solve_index - 1
        if solve_index == n_iter or not wrong.any():
            return U, score, solve_index
        best = (score, U, score)
        gamma = gamma + H[wrong].T @ H[wrong]
        lam = lam + T[wrong].T @ H[wrong]
        U = solve(gamma, lam)
    raise AssertionError("unreachable")


def test_iterations_follow_eq_8_9_and_keep_training_accuracy():
    X, y = _data(n=400, d=10, flip=0.15, seed=4)
    first = IELMClassifier(n_hidden=30, C=10.0, random_state=0).fit(X, y)
    assert (first.predict(X) != y).any(), "the first solve must misclassify something"
    iterated = IELMClassifier(n_hidden=30, C=10.0, n_iter=3, random_state=0).fit(X, y)
    U_ref, _, kept = _reference_iterations(X, y, first, 10.0, 3, 3)
    assert iterated.n_iter_ == kept
    np.testing.assert_allclose(iterated.output_weights_.numpy(), U_ref, rtol=1e-8, atol=1e-10)
    acc_first = (first.predict(X) == y).mean()
    acc_iter = (iterated.predict(X) == y).mean()
    assert acc_iter >= acc_first
    assert iterated.train_scores_[0] == pytest.approx(acc_first)
    # a re-solve with misclassified samples really changes the head on this data
    forced = IELMClassifier(n_hidden=30, C=10.0, random_state=0).fit(X, y)
    H = torch.from_numpy(_reference_hidden(first, X))
    wrong = torch.from_numpy(first.predict(X) != y)
    T = torch.eye(3, dtype=torch.float64)[torch.from_numpy(y)]
    g = forced.gamma_ + H[wrong].T @ H[wrong]
    lam = forced.lambda_ + T[wrong].T @ H[wrong]
    assert not torch.allclose(solve_output_weights(g, lam, 10.0), first.output_weights_)


def test_iterations_on_a_stream_match_in_memory():
    X, y = _data(n=400, d=10, flip=0.15, seed=4)
    batches = list(zip(np.array_split(X, 4), np.array_split(y, 4), strict=True))
    memory = IELMClassifier(n_hidden=30, C=10.0, n_iter=3, random_state=0).fit(X, y)
    stream = IELMClassifier(n_hidden=30, C=10.0, n_iter=3, random_state=0)
    stream.fit_batches(lambda: iter(batches), classes=[0, 1, 2])
    np.testing.assert_allclose(
        stream.output_weights_.numpy(), memory.output_weights_.numpy(), rtol=1e-9
    )
    assert stream.train_scores_ == pytest.approx(memory.train_scores_)
    with pytest.raises(TypeError, match="one-shot iterator"):
        IELMClassifier(n_hidden=8, n_iter=2).fit_batches(iter(batches))


def test_check_estimator():
    results = check_estimator(IELMClassifier(n_hidden=50), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert failed == []
    assert len([r for r in results if r["status"] == "passed"]) > 50


def test_predict_proba_consistent_with_predict():
    X, y = _data(n=300, d=12, classes=4)
    model = IELMClassifier(n_hidden=40, random_state=0).fit(X, y)
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(model.classes_[proba.argmax(1)], model.predict(X))


def test_multilabel_indicator_targets():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6))
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 1] > 0], axis=1).astype(int)
    model = IELMClassifier(n_hidden=200, C=100.0, random_state=0).fit(X, Y)
    assert model.output_weights_.shape == (3, 200)
    predicted = model.predict(X)
    assert predicted.shape == Y.shape
    assert (predicted == Y).mean() > 0.9
    proba = model.predict_proba(X)
    np.testing.assert_array_equal(proba > 0.5, predicted == 1)


def test_class_weight_scales_rows():
    X, y = _data(n=300, d=10, classes=2)
    weights = {0: 3.0, 1: 0.5}
    model = IELMClassifier(n_hidden=16, C=1.0, class_weight=weights, random_state=0).fit(X, y)
    H = _reference_hidden(model, X)
    w = np.where(y == 0, 3.0, 0.5)
    U = _reference_solution(H, np.eye(2)[y], 1.0, weights=w)
    np.testing.assert_allclose(model.output_weights_.numpy(), U, rtol=1e-8)
    balanced = IELMClassifier(n_hidden=16, class_weight="balanced", random_state=0)
    balanced.fit(X[:200], np.r_[np.zeros(180, int), np.ones(20, int)])
    with pytest.raises(ValueError, match="balanced"):
        IELMClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1])
    # after fit too (a chunk's own counts would weight it), checked input or not
    for check_input in (True, False):
        with pytest.raises(ValueError, match="balanced"):
            balanced.partial_fit(torch.from_numpy(X[:50]), y[:50], check_input=check_input)
    batches = [(X[:150], y[:150]), (X[150:], y[150:])]
    with pytest.raises(ValueError, match="balanced"):  # as fit_batches refuses it
        sweep(batches, X, y, n_hidden=[8], C=[1.0], class_weight="balanced")


def test_torch_inputs_and_low_precision_dtypes():
    X, y = _data(n=200, d=12)
    ref = IELMClassifier(n_hidden=32, random_state=0).fit(X.astype(np.float32), y)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        Xt = torch.from_numpy(X).to(dtype)
        model = IELMClassifier(n_hidden=32, random_state=0).fit(Xt, torch.from_numpy(y))
        assert model.gamma_.dtype == torch.float64
        agree = (model.predict(Xt) == ref.predict(X.astype(np.float32))).mean()
        assert agree > (0.999 if dtype == torch.float32 else 0.95)
    Xh = X.astype(np.float16)
    model = IELMClassifier(n_hidden=32, random_state=0).fit(Xh, y)
    assert np.isfinite(model.decision_function(Xh)).all()


def test_standardize_and_module_export():
    X, y = _data(n=300, d=12)
    X = X * 50 + 7
    model = IELMClassifier(n_hidden=64, standardize=True, random_state=0).fit(X, y)
    module = model.to_module(dtype=torch.float64)
    with torch.no_grad():
        out = module(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out.argmax(1), model.predict(X))


def test_standardize_uses_every_row_of_a_batch_stream():
    """fit_batches and sweep standardise by the mean and scale of every row (a pass of their
    own), as fit does with the whole X: not by the first batch, which in a length-sorted
    feature pass holds the longest texts."""
    from eft.ielm import feature_moments, sweep

    X, y = _data(n=300, d=12)
    X = X * 50 + 7
    X[:20] += 30  # the first batch is unlike the rest
    batches = [(X[i : i + 20], y[i : i + 20]) for i in range(0, 300, 20)]
    whole = IELMClassifier(n_hidden=64, standardize=True, random_state=0).fit(X, y)
    for source in (batches, lambda: iter(batches)):  # re-iterable: a list or a function
        streamed = IELMClassifier(n_hidden=64, standardize=True, random_state=0)
        streamed.fit_batches(source)
        np.testing.assert_allclose(streamed.mean_.numpy(), X.mean(0), rtol=1e-6)
        np.testing.assert_allclose(streamed.scale_.numpy(), X.std(0), rtol=1e-6)
        np.testing.assert_allclose(
            streamed.decision_function(X), whole.decision_function(X), atol=1e-6
        )
    best = sweep(batches, X, y, n_hidden=[32, 64], C=[1.0], standardize=True, random_state=0)
    np.testing.assert_allclose(best.best_estimator.mean_.numpy(), X.mean(0), rtol=1e-6)
    # a one-shot iterator is read once: its first batch standardises, as partial_fit's does
    once = IELMClassifier(n_hidden=64, standardize=True, random_state=0)
    once.fit_batches(iter(batches))
    np.testing.assert_allclose(once.mean_.numpy(), X[:20].mean(0), rtol=1e-6)
    # moments about a shift: exact for features far from 0, 1 for a constant feature
    far = np.random.default_rng(0).normal(1e6, 1e-2, size=(500, 3))
    far[:, 2] = 5.0
    mean, scale = feature_moments([(far[:250],), (far[250:],)])
    np.testing.assert_allclose(mean.numpy(), far.mean(0), rtol=1e-12)
    np.testing.assert_allclose(scale.numpy()[:2], far.std(0)[:2], rtol=1e-6)
    assert scale[2] == 1.0


def test_features_that_require_grad_are_read_as_data():
    """Features straight from a module outside no_grad fit and predict (they are detached)."""
    X, y = _data(n=120, d=8)
    layer = torch.nn.Linear(8, 8)
    features = layer(torch.from_numpy(X).float())
    assert features.requires_grad
    model = IELMClassifier(n_hidden=16, random_state=0).fit(features, y)
    model.partial_fit(features[:10], y[:10])
    expected = IELMClassifier(n_hidden=16, random_state=0).fit(features.detach(), y)
    expected.partial_fit(features.detach()[:10], y[:10])
    np.testing.assert_array_equal(model.predict(features), expected.predict(features.detach()))


def test_save_load_roundtrip(tmp_path):
    X, y = _data(n=300, d=12)
    labels = np.array(["neg", "neu", "pos"])[y]
    model = IELMClassifier(n_hidden=40, C=3.0, standardize=True, random_state=0).fit(X, labels)
    path = tmp_path / "head.safetensors"
    model.save(path)
    loaded = IELMClassifier.load(path)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_allclose(loaded.decision_function(X), model.decision_function(X))
    assert [p.name for p in tmp_path.iterdir()] == ["head.safetensors"]  # no temp file left
    # class weights keyed by numpy labels (compute_class_weight's) and a numpy seed round-trip
    weights = dict(zip(np.unique(y), [3.0, 1.0, 0.5], strict=True))
    weighted = IELMClassifier(n_hidden=20, class_weight=weights, random_state=np.int64(7))
    weighted.fit(X, y).save(tmp_path / "weighted.safetensors")
    again = IELMClassifier.load(tmp_path / "weighted.safetensors")
    assert again.class_weight == {0: 3.0, 1: 1.0, 2: 0.5} and again.random_state == 7
    weighted.partial_fit(X[:50], y[:50])  # the weights still apply to further chunks
    again.partial_fit(X[:50], y[:50])
    np.testing.assert_allclose(again.decision_function(X), weighted.decision_function(X))
    # older saves wrote the weights as a JSON object, whose keys are strings
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(tmp_path / "weighted.safetensors", framework="pt") as handle:
        meta = json.loads(handle.metadata()["eft"])
    meta["params"]["class_weight"] = {"0": 3.0, "1": 1.0, "2": 0.5}
    tensors = load_file(tmp_path / "weighted.safetensors")
    save_file(tensors, tmp_path / "older.safetensors", metadata={"eft": json.dumps(meta)})
    assert IELMClassifier.load(tmp_path / "older.safetensors").class_weight == weights
    bogus = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, bogus)
    with pytest.raises(ValueError, match="not an eft I-ELM head"):
        IELMClassifier.load(bogus)


def test_sweep_matches_individual_fits():
    X, y = _data(n=900, d=24, flip=0.05)
    Xtr, ytr, Xva, yva = X[:600], y[:600], X[600:], y[600:]
    batches = list(zip(np.array_split(Xtr, 3), np.array_split(ytr, 3), strict=True))
    result = sweep(batches, Xva, yva, n_hidden=[10, 20, 40], C=[0.1, 1.0, 10.0], random_state=0)
    assert len(result.table) == 9
    best = result.best_estimator
    assert {"n_hidden": best.n_hidden, "C": best.C} == result.best_params
    best_row = max(result.table, key=lambda r: r["accuracy"])
    assert best_row["accuracy"] == pytest.approx((best.predict(Xva) == yva).mean())
    # every row equals a head solved directly from the leading block of the largest draw
    full = IELMClassifier(n_hidden=40, random_state=0).fit(Xtr, ytr)
    for row in result.table:
        nh, C = int(row["n_hidden"]), row["C"]
        U = solve_output_weights(full.gamma_[:nh, :nh], full.lambda_[:, :nh], C)
        H = hidden_layer(
            torch.from_numpy(Xva), full.input_weights_[:nh], full.bias_[:nh], "leaky_relu"
        )
        predicted = (H @ U.T).argmax(1).numpy()
        assert row["accuracy"] == pytest.approx((predicted == yva).mean())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda X, y: IELMClassifier(C=0).fit(X, y), "C must be"),
        (lambda X, y: IELMClassifier(C=-1.0).fit(X, y), "C must be"),
        (lambda X, y: IELMClassifier(n_hidden=0).fit(X, y), "n_hidden"),
        (lambda X, y: IELMClassifier().fit(X, np.zeros(len(y))), "class"),
        (lambda X, y: IELMClassifier(activation="swish").fit(X, y), "activation"),
    ],
)
def test_bad_parameters_and_labels(make, match):
    X, y = _data(n=50, d=5)
    with pytest.raises(ValueError, match=match):
        make(X, y)


def test_a_device_torch_cannot_use_is_a_value_error(monkeypatch):
    X, y = _data(n=50, d=5)
    with pytest.raises(ValueError, match="'gpu' is not a torch device; use 'auto', 'cpu'"):
        IELMClassifier(n_hidden=8, device="gpu").fit(X, y)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU; use device 'cpu' or 'auto'"):
        IELMClassifier(n_hidden=8, device="cuda").fit(X, y)  # was torch's AssertionError


def test_bad_input_raises_and_changes_nothing():
    X, y = _data(n=100, d=5)
    model = IELMClassifier(n_hidden=10, random_state=0)
    with pytest.raises(ValueError, match="fitted|not fitted"):
        model.predict(X)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(bad, y)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="infinity|NaN"):
        model.fit(bad, y)
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.fit(torch.from_numpy(bad), torch.from_numpy(y))
    model.partial_fit(X, y, classes=[0, 1, 2])
    gamma = model.gamma_.clone()
    seen = model.n_samples_seen_
    with pytest.raises(ValueError, match="unknown to the model: \\[7\\]"):
        model.partial_fit(X[:5], np.array([0, 1, 7, 2, 1]))
    with pytest.raises(ValueError, match="features"):
        model.partial_fit(X[:5, :4], y[:5])
    assert torch.equal(model.gamma_, gamma) and model.n_samples_seen_ == seen
    with pytest.raises(ValueError, match="expecting 5 features"):
        model.predict(X[:, :3])
    with pytest.raises(ValueError, match="classes must be passed"):
        IELMClassifier().partial_fit(X, y)


def test_ill_conditioned_systems_warn_and_stay_finite():
    X, y = _data(n=30, d=5)
    X = np.repeat(X, 2, axis=0)  # duplicated samples, nh far above n
    y = np.repeat(y, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = IELMClassifier(n_hidden=300, C=1e12, random_state=0).fit(X, y)
    assert np.isfinite(model.output_weights_.numpy()).all()
    assert any("I-ELM system" in str(w.message) for w in caught)
    assert (model.predict(X) == y).mean() > 0.9
    tiny = IELMClassifier(n_hidden=20, C=1e-12, random_state=0).fit(X, y)
    assert np.isfinite(tiny.decision_function(X)).all()


def test_class_weight_labels_partial_fit_classes_and_huge_C_are_checked():
    """As scikit-learn: a class_weight key naming no class is refused (it weighted nothing),
    partial_fit refuses other classes than its first call's, and C=10**400 is not finite."""
    X, y = _data(n=120, d=8)
    for fit in (
        lambda m: m.fit(X, y),
        lambda m: m.partial_fit(X, y, classes=[0, 1, 2]),
        lambda m: m.fit_batches([(X, y)]),
    ):
        with pytest.raises(
            ValueError, match=r"class_weight names labels that are not classes: \['1'\]"
        ):
            fit(IELMClassifier(n_hidden=8, class_weight={"1": 50.0}))
    model = IELMClassifier(n_hidden=8).partial_fit(X, y, classes=[0, 1, 2])
    model.partial_fit(X, y, classes=[2, 1, 0])  # the same labels in another order: fine
    with pytest.raises(ValueError, match=r"classes=\[0, 1, 2, 3\] is not the same as on the first"):
        model.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="C must be a finite number > 0"):
        IELMClassifier(C=10**400).fit(X, y)


def test_partial_fit_standardises_by_the_weighted_moments_as_fit_does():
    """fit weighed the standardisation by sample_weight, partial_fit (fused mode's path)
    did not."""
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5)) * [1, 2, 3, 4, 5] + 3
    y = rng.integers(0, 2, 80)
    weights = rng.uniform(0, 3, 80)
    scaler = StandardScaler().fit(X, sample_weight=weights)
    for head in (
        IELMClassifier(n_hidden=16, standardize=True).fit(X, y, sample_weight=weights),
        IELMClassifier(n_hidden=16, standardize=True).partial_fit(
            X, y, classes=[0, 1], sample_weight=weights
        ),
    ):
        np.testing.assert_allclose(head.mean_.double().numpy(), scaler.mean_, rtol=1e-5)
        np.testing.assert_allclose(head.scale_.double().numpy(), scaler.scale_, rtol=1e-5)
