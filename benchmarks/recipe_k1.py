"""Which recipe closes the gap at k = 1? A study of the brief BP stage and the I-ELM head.

    python benchmarks/recipe_k1.py --dataset trec [--learning-rates 5e-5 1e-4 2e-4]
        [--poolings cls mean cls_last4] [--batch-sizes 32] [--warmup-ratios 0]
        [--layer-lr-decays 1] [--label-smoothings 0] [--contrastive-weights 0]
        [--head-iterations 2 3 5] [--extra-heads]
        [--seed 42] [--name trec] [--max-train N] [--max-validation N] [--max-test N]
        [--max-length 128]

For every learning rate x pooling x batch size x warm-up ratio x layer-wise rate decay x
label smoothing x supervised contrastive weight (``EFTConfig`` fields), the encoder is
fine-tuned for ONE epoch (linear head, ``method="bp"``, the same BP stage as EFT
with k = 1), then the train / validation / test features are computed once. On those
features, for every head variant (feature standardisation on/off x activation), the one-pass
sweep (``eft.ielm.sweep``) scores n_hidden x C on the validation split. Reported per recipe:
the linear head's test score after the epoch, the default head's (n_hidden 1000, C 1,
leaky_relu, no standardisation) and the validation-best head's test scores. The recipe to
recommend is chosen on validation only. With ``--head-iterations``, the default and the
validation-best head are refitted with each ``n_iter`` (the misclassified-sample re-solves of
the paper's Appendix B, Eq. 8-9, which its experiments skipped). With ``--extra-heads``, three
heads beyond the paper's on the same features, each with the default head's n_hidden and C:
direct links (the ridge solve of Eq. 5 on ``[H, X]`` instead of ``H``, the random-vector
functional-link variant of the ELM), the I-ELM's and the fine-tuned linear head's softmax
averaged, and five I-ELM heads of different random layers averaged.

Writes ``results/recipe_k1_<name>.json`` and ``.md`` (name: the dataset unless given).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import (  # noqa: E402
    load_average,
    load_dataset_splits,
    machine_markdown,
    markdown_table,
    write_results,
)

from eft import EFTClassifier, EFTConfig, IELMClassifier  # noqa: E402
from eft.benchmark import add_data_arguments, run_header  # noqa: E402
from eft.ielm import sweep  # noqa: E402
from eft.metrics import classification_scores  # noqa: E402

METRIC = {"meld": "weighted_f1", "iemocap": "weighted_f1", "ag_news": "accuracy"}
ACTIVATIONS = ("leaky_relu", "tanh")
N_HIDDEN = (500, 1000, 2000)
C_VALUES = (0.1, 1.0, 10.0, 100.0)


def _score(truth: Sequence[Any], predicted: Sequence[Any], metric: str) -> float:
    return classification_scores(list(truth), list(predicted))[metric]


RECIPE_FIELDS = {  # EFTConfig field -> (its option here, its column / label)
    "learning_rate": ("--learning-rates", "lr"),
    "pooling": ("--poolings", "pooling"),
    "batch_size": ("--batch-sizes", "batch"),
    "warmup_ratio": ("--warmup-ratios", "warm-up"),
    "layer_lr_decay": ("--layer-lr-decays", "layer decay"),
    "label_smoothing": ("--label-smoothings", "label smoothing"),
    "contrastive_weight": ("--contrastive-weights", "SCL weight"),
}


def _recipe_label(recipe: dict[str, Any]) -> str:
    return ", ".join(
        f"{label} {recipe[field]:g}"
        if isinstance(recipe[field], float)
        else f"{label} {recipe[field]}"
        for field, (_, label) in RECIPE_FIELDS.items()
    )


def run_recipe(
    recipe: dict[str, Any],
    data,
    base: dict[str, Any],
    metric: str,
    head_iterations: Sequence[int] = (),
    extra_heads: bool = False,
) -> dict:
    """One epoch of BP with ``recipe`` (values of :data:`RECIPE_FIELDS`), then every head."""
    train, validation, test = data
    config = EFTConfig(**base, method="bp", bp_epochs=1, **recipe)
    start = time.perf_counter()
    clf = EFTClassifier(config).fit(list(train.texts), list(train.labels))
    bp_seconds = clf.timings_["bp"]
    X = {
        name: clf.features(list(split.texts))
        for name, split in (("train", train), ("validation", validation), ("test", test))
    }
    y = {"train": np.asarray(train.labels), "validation": list(validation.labels)}
    with torch.inference_mode():
        logits = {
            name: clf.model_.head(torch.from_numpy(X[name]).float()).numpy()
            for name in ("validation", "test")
        }
    linear_test = _score(test.labels, clf.classes_[logits["test"].argmax(1)], metric)
    default = IELMClassifier(n_hidden=1000, C=1.0, random_state=base["seed"])
    default.fit(X["train"], y["train"])
    record: dict[str, Any] = {
        **recipe,
        "bp_seconds": bp_seconds,
        "linear_head_test": linear_test,
        "default_head_validation": _score(
            y["validation"], default.predict(X["validation"]), metric
        ),
        "default_head_test": _score(test.labels, default.predict(X["test"]), metric),
        "heads": [],
    }
    scoring = "weighted_f1" if metric == "weighted_f1" else "accuracy"
    for standardize, activation in itertools.product((False, True), ACTIVATIONS):
        result = sweep(
            lambda: [(X["train"], y["train"])],
            X["validation"],
            y["validation"],
            n_hidden=N_HIDDEN,
            C=C_VALUES,
            activation=activation,
            standardize=standardize,
            scoring=scoring,
            random_state=base["seed"],
        )
        best = max(result.table, key=lambda row: row[scoring])
        record["heads"].append(
            {
                "standardize": standardize,
                "activation": activation,
                **result.best_params,
                "validation": 100 * best[scoring],
                "test": _score(test.labels, result.best_estimator.predict(X["test"]), metric),
                "sweep_seconds": sum(result.seconds.values()),
            }
        )
    record["best_head"] = max(record["heads"], key=lambda h: h["validation"])
    record["iterations"] = _iterations(record, X, y, test.labels, metric, base, head_iterations)
    if extra_heads:
        truth = {"validation": y["validation"], "test": list(test.labels)}
        record["extra_heads"] = _extra_heads(
            default, logits, X, y["train"], truth, metric, base["seed"]
        )
    record["seconds"] = time.perf_counter() - start
    print(
        f"[{_recipe_label(recipe)}] linear {linear_test:.2f}, default head "
        f"{record['default_head_test']:.2f}, best head {record['best_head']['test']:.2f} "
        f"(val {record['best_head']['validation']:.2f}), {record['seconds']:.0f} s",
        flush=True,
    )
    return record


def _direct_link_scores(head: IELMClassifier, X: dict[str, np.ndarray], y_train) -> dict:
    """Eq. 5 solved on ``[H, X]``: the hidden layer plus the features themselves."""
    hidden = head.to_module(torch.float64)[:2]
    mean, scale = X["train"].mean(0), X["train"].std(0) + 1e-12

    def design(name: str) -> np.ndarray:
        with torch.inference_mode():
            H = hidden(torch.from_numpy(X[name]).double()).numpy()
        return np.hstack([H, (X[name] - mean) / scale])

    Z = design("train")
    T = (np.asarray(y_train)[:, None] == head.classes_[None, :]).astype(np.float64)
    system = Z.T @ Z + np.eye(Z.shape[1]) / head.C
    U = np.linalg.solve(system, Z.T @ T)
    return {name: design(name) @ U for name in ("validation", "test")}


def _extra_heads(default, linear_logits, X, y_train, truth, metric, seed) -> list[dict]:
    """Heads beyond the paper's, on the same features (default n_hidden and C)."""
    classes = default.classes_

    def softmax(a: np.ndarray) -> np.ndarray:
        e = np.exp(a - a.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ensemble = [default] + [
        IELMClassifier(n_hidden=default.n_hidden, C=default.C, random_state=seed + i).fit(
            X["train"], y_train
        )
        for i in range(1, 5)
    ]
    outputs = {
        "direct links [H, X]": _direct_link_scores(default, X, y_train),
        "I-ELM + linear head (softmax mean)": {
            name: default.predict_proba(X[name]) + softmax(linear_logits[name])
            for name in ("validation", "test")
        },
        "5 I-ELM heads (mean output)": {
            name: sum(head.predict_proba(X[name]) for head in ensemble)
            for name in ("validation", "test")
        },
    }
    rows = []
    for head, scores in outputs.items():
        rows.append(
            {
                "head": head,
                **{
                    name: _score(truth[name], classes[scores[name].argmax(1)], metric)
                    for name in ("validation", "test")
                },
            }
        )
        print(f"  {head}: validation {rows[-1]['validation']:.2f}, test {rows[-1]['test']:.2f}")
    return rows


def _iterations(record, X, y, test_labels, metric, base, head_iterations) -> list[dict]:
    """The default and the best head refitted with each n_iter > 1 (Eq. 8-9)."""
    heads = {
        "default": {"n_hidden": 1000, "C": 1.0, "activation": "leaky_relu", "standardize": False},
        "best": {k: record["best_head"][k] for k in ("n_hidden", "C", "activation", "standardize")},
    }
    rows = []
    for (name, params), n_iter in itertools.product(heads.items(), head_iterations):
        head = IELMClassifier(**params, n_iter=n_iter, random_state=base["seed"])
        clock = time.perf_counter()
        head.fit(X["train"], y["train"])
        rows.append(
            {
                "head": name,
                **params,
                "n_iter": n_iter,
                "n_iter_kept": int(head.n_iter_),
                "train_scores": [100 * s for s in head.train_scores_],
                "validation": _score(y["validation"], head.predict(X["validation"]), metric),
                "test": _score(test_labels, head.predict(X["test"]), metric),
                "fit_seconds": time.perf_counter() - clock,
            }
        )
        print(
            f"  {name} head, n_iter {n_iter}: kept {head.n_iter_}, validation "
            f"{rows[-1]['validation']:.2f}, test {rows[-1]['test']:.2f}",
            flush=True,
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4])
    parser.add_argument("--poolings", nargs="+", default=["cls", "mean", "cls_last4"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--warmup-ratios", type=float, nargs="+", default=[0.0])
    parser.add_argument("--layer-lr-decays", type=float, nargs="+", default=[1.0])
    parser.add_argument("--label-smoothings", type=float, nargs="+", default=[0.0])
    parser.add_argument(
        "--contrastive-weights",
        type=float,
        nargs="+",
        default=[0.0],
        help="weights of the supervised contrastive loss (EFTConfig.contrastive_weight)",
    )
    parser.add_argument(
        "--head-iterations",
        type=int,
        nargs="*",
        default=[],
        help="refit the default and the best head with each n_iter (> 1: Eq. 8-9)",
    )
    parser.add_argument(
        "--extra-heads",
        action="store_true",
        help="also score direct links, I-ELM + linear head, and five averaged I-ELM heads",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--name", help="results name (default: the dataset)")
    args = parser.parse_args(argv)
    if not args.dataset:
        parser.error("--dataset is required")
    metric = METRIC.get(args.dataset, "accuracy")
    train, validation, test, options = load_dataset_splits(args)
    base = {"model": args.model, "max_length": args.max_length, "seed": args.seed}
    base["progress"] = False
    payload: dict[str, Any] = {
        **run_header(args, args.dataset, metric, (train, validation, test), options),
        "grid": {"n_hidden": N_HIDDEN, "C": C_VALUES, "activation": ACTIVATIONS},
        "recipes": [],
    }
    grids = {
        field: getattr(args, option.removeprefix("--").replace("-", "_"))
        for field, (option, _) in RECIPE_FIELDS.items()
    }
    for values in itertools.product(*grids.values()):
        recipe = dict(zip(grids, values, strict=True))
        record = run_recipe(
            recipe, (train, validation, test), base, metric, args.head_iterations, args.extra_heads
        )
        payload["recipes"].append(record)
    chosen = max(payload["recipes"], key=lambda r: r["best_head"]["validation"])
    defaults = EFTConfig()  # the reference: EFT's default BP stage
    reference = next(
        (r for r in payload["recipes"] if all(r[k] == getattr(defaults, k) for k in RECIPE_FIELDS)),
        payload["recipes"][0],
    )
    payload["chosen_on_validation"] = {
        **{k: chosen[k] for k in RECIPE_FIELDS},
        **{k: chosen["best_head"][k] for k in ("standardize", "activation", "n_hidden", "C")},
        "test": chosen["best_head"]["test"],
        "reference": {k: reference[k] for k in RECIPE_FIELDS},
        "reference_default_test": reference["default_head_test"],
    }
    payload["machine"]["load_average_at_end"] = load_average()
    rows = []
    for r in payload["recipes"]:
        h = r["best_head"]
        rows.append(
            [
                *(f"{r[k]:g}" if isinstance(r[k], float) else r[k] for k in RECIPE_FIELDS),
                round(r["linear_head_test"], 2),
                round(r["default_head_test"], 2),
                f"{'std, ' if h['standardize'] else ''}{h['activation']}, nh {h['n_hidden']}, "
                f"C {h['C']:g}",
                round(h["validation"], 2),
                round(h["test"], 2),
                round(r["bp_seconds"], 1),
            ]
        )
    c = payload["chosen_on_validation"]
    lines = [
        f"# Recipes at k = 1 on {args.dataset}, seed {args.seed} (`benchmarks/recipe_k1.py`)",
        "",
        machine_markdown(payload["machine"]),
        f"- Sizes: {payload['sizes']}; metric: {metric} (test unless marked validation); "
        f"head grid: n_hidden {N_HIDDEN} x C {C_VALUES} x activation {ACTIVATIONS} x "
        "standardisation on/off",
        "",
        markdown_table(
            [
                *(label for _, label in RECIPE_FIELDS.values()),
                "linear head",
                "default I-ELM head",
                "best head on validation",
                "its validation",
                "its test",
                "BP s",
            ],
            rows,
        ),
        "",
        f"Chosen on validation: {_recipe_label(c)}, "
        f"{'standardised, ' if c['standardize'] else ''}{c['activation']}, nh {c['n_hidden']}, "
        f"C {c['C']:g}: test {c['test']:.2f} against {c['reference_default_test']:.2f} for "
        f"{_recipe_label(reference)} with the default head (leaky_relu, nh 1000, C 1).",
    ]
    shown = len(lines) - len(rows) - 4  # printed from the table on
    iteration_rows = [
        [
            _recipe_label(r),
            f"{i['head']}: {'std, ' if i['standardize'] else ''}{i['activation']}, "
            f"nh {i['n_hidden']}, C {i['C']:g}",
            i["n_iter"],
            i["n_iter_kept"],
            " / ".join(f"{t:.2f}" for t in i["train_scores"]),
            round(i["validation"], 2),
            round(i["test"], 2),
        ]
        for r in payload["recipes"]
        for i in r["iterations"]
    ]
    if iteration_rows:
        lines += [
            "",
            "The misclassified-sample re-solves (Eq. 8-9), on each recipe's features; n_iter 1 "
            "is the table above (train: accuracy of each solve, in %):",
            "",
            markdown_table(
                ["recipe", "head", "n_iter", "kept", "train", "validation", "test"],
                iteration_rows,
            ),
        ]
    extra_rows = [
        [
            _recipe_label(r),
            "default I-ELM head",
            round(r["default_head_validation"], 2),
            round(r["default_head_test"], 2),
        ]
        for r in payload["recipes"]
        if "extra_heads" in r
    ]
    for r in payload["recipes"]:
        for head in r.get("extra_heads", []):
            extra_rows.append(
                [
                    _recipe_label(r),
                    head["head"],
                    round(head["validation"], 2),
                    round(head["test"], 2),
                ]
            )
    if extra_rows:
        lines += [
            "",
            "Heads beyond the paper's on each recipe's features (n_hidden 1000, C 1, leaky_relu):",
            "",
            markdown_table(["recipe", "head", "validation", "test"], extra_rows),
        ]
    write_results(f"recipe_k1_{args.name or args.dataset}", payload, "\n".join(lines))
    print("\n".join(lines[shown:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
