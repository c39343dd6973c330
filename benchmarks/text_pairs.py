"""Sentence pairs: EFT on a pair task, and whether BERT's segment ids matter.

    python benchmarks/text_pairs.py [--train-pairs 3000] [--ks 1,2,3] [--seed 42]
    python benchmarks/text_pairs.py --tune      # what eft tune chooses for the pairs

No NLI or paraphrase data is available here, so the pair task is built from TREC-6: two
questions, labelled ``same`` when they ask for the same coarse answer type (HUM, LOC, NUM, ...)
and ``different`` otherwise, half of each. Every question of a split is the first text of one
pair (``--train-pairs`` of them for training); its partner is drawn from the same split (seed
0): a question of its own class or of another. The model must compare the two texts, which
neither text alone decides. Splits as ``eft bench`` uses TREC (10 % of train for validation;
the 500 test questions give the test pairs).

Methods, embedded MiniLM, one seed, each fitted with the validation pairs:

* ``eft_pairs``: EFT (k = 1) on ``(q1, q2)`` tuples: the tokenizer's pair template, segment ids
  0 and 1 (what ``--text-pair-column`` does);
* ``eft_joined``: EFT (k = 1) on ``"q1 [SEP] q2"`` strings: the same token ids, segment ids all
  0 (what a user got by joining the columns before ``eft`` took pairs);
* ``eft_pairs_kK``: EFT on the pairs with K BP epochs, for each further K of ``--ks``;
* ``bp``: standard fine-tuning on the pairs, up to 10 epochs, early stopping with patience 2 on
  the validation accuracy (``eft bench``'s baseline);
* ``probe``: the frozen encoder (k = 0) and the I-ELM head on the pairs.

Reports test accuracy, training seconds, the ratio to ``bp``'s and the paired-bootstrap p-value
of "worse than bp"; writes ``results/text_pairs_trec.json`` and ``.md``.

With ``--tune``: ``eft tune``'s search on the same pairs (k up to 6, the default n_hidden x C
grid, the paper's rule) and EFT fitted with the configuration it chose; writes
``results/text_pairs_trec_tuned.json`` and ``.md`` (compare with ``bp`` in the file above).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    data_root,
    load_average,
    machine_info,
    machine_markdown,
    markdown_table,
    tune_then_fit,
    tuning_record,
    write_results,
    write_tuned_results,
)

from eft import EFTClassifier, EFTConfig  # noqa: E402
from eft.benchmark import load_splits  # noqa: E402
from eft.datasets import Split  # noqa: E402
from eft.encoder import load_tokenizer  # noqa: E402
from eft.metrics import paired_bootstrap  # noqa: E402

TASK = "TREC-6 question pairs: same coarse answer type or not (balanced)"


def question_pairs(
    split: Split, n_pairs: int, seed: int
) -> tuple[list[tuple[str, str]], list[str]]:
    """``n_pairs`` (at most one per question) balanced same/different-answer-type pairs."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(split.labels)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    firsts = rng.permutation(len(split))[:n_pairs]
    pairs, targets = [], []
    for position, i in enumerate(firsts):
        same = position % 2 == 0
        pool = by_class[labels[i]] if same else np.flatnonzero(labels != labels[i])
        j = int(rng.choice(pool[pool != i]))
        pairs.append((split.texts[i], split.texts[j]))
        targets.append("same" if same else "different")
    return pairs, targets


def tuned_run(data: dict, options: dict, args: argparse.Namespace, machine: dict) -> int:
    """``eft tune`` on the pairs, then EFT with the configuration it chose."""
    result, clf = tune_then_fit(data, args.seed)
    test_texts, test_labels = data["test"]
    accuracy = 100 * float(np.mean(clf.predict(test_texts) == np.asarray(test_labels)))
    payload = tuning_record(TASK, args, data, options, result, machine)
    payload["eft_tuned"] = {"test_accuracy": accuracy, "train_seconds": clf.timings_["train"]}
    test = f"test accuracy {accuracy:.2f}, train {clf.timings_['train']:.1f} s"
    title = "Sentence pairs: eft tune's choice (`benchmarks/text_pairs.py --tune`)"
    write_tuned_results("text_pairs_trec_tuned", title, payload, result, "accuracy", test)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-pairs", type=int, default=3000)
    parser.add_argument("--data-dir", help="root of the datasets (default: $EFT_DATA_DIR)")
    parser.add_argument("--ks", default="1,2,3", help="BP epochs of EFT on the pairs")
    parser.add_argument("--seed", type=int, default=42, help="training seed")
    parser.add_argument("--tune", action="store_true", help="eft tune's choice instead")
    args = parser.parse_args(argv)
    machine = machine_info()  # before the runs: the load average at the start

    train, validation, test, options = load_splits("trec", args.data_dir or data_root())
    data = {
        "train": question_pairs(train, args.train_pairs, 0),
        "validation": question_pairs(validation, len(validation), 0),
        "test": question_pairs(test, len(test), 0),
    }
    separator = load_tokenizer(None).sep_token
    joined = {
        name: ([f"{a} {separator} {b}" for a, b in pairs], labels)
        for name, (pairs, labels) in data.items()
    }
    if args.tune:
        return tuned_run(data, options, args, machine)
    ks = [int(k) for k in args.ks.split(",") if int(k) != 1]
    methods = {
        "eft_pairs": (data, {}),
        "eft_joined": (joined, {}),
        **{f"eft_pairs_k{k}": (data, {"bp_epochs": k}) for k in ks},
        "bp": (data, {"method": "bp", "bp_epochs": 10, "early_stopping_patience": 2}),
        "probe": (data, {"bp_epochs": 0}),
    }
    results, predictions = {}, {}
    for name, (inputs, overrides) in methods.items():
        config = EFTConfig(seed=args.seed, progress=False, **overrides)
        clf = EFTClassifier(config).fit(*inputs["train"], *inputs["validation"])
        test_texts, test_labels = inputs["test"]
        predictions[name] = clf.predict(test_texts).tolist()
        results[name] = {
            "test_accuracy": 100 * float(np.mean(np.asarray(predictions[name]) == test_labels)),
            "train_seconds": clf.timings_["train"],
            "bp_epochs": len(clf.history_.get("bp_epoch_seconds", [])),
            "bp_best_epoch": clf.history_.get("bp_best_epoch"),
            "text_pairs": clf.text_pairs_,
            "config": config.to_dict(),
        }
        print(name, {k: v for k, v in results[name].items() if k != "config"}, flush=True)
    truth = data["test"][1]
    for name, result in results.items():
        result["time_ratio_to_bp"] = result["train_seconds"] / results["bp"]["train_seconds"]
        if name != "bp":
            test = paired_bootstrap(truth, predictions["bp"], predictions[name], "accuracy")
            result["p_value_vs_bp"] = test["p_value_worse"]
    sizes = {name: len(labels) for name, (_, labels) in data.items()}
    payload = {
        "task": TASK,
        "model": "all-MiniLM-L6-v2 (embedded)",
        "seed": args.seed,
        "command_options": vars(args),
        "sizes": sizes,
        "dataset_options": options,
        "machine": machine,
        "methods": results,
        "examples": {"train": [list(p) for p in data["train"][0][:3]]},
    }
    payload["machine"]["load_average_at_end"] = load_average()
    names = {
        "eft_pairs": "EFT k = 1, (q1, q2) pairs",
        "eft_joined": 'EFT k = 1, "q1 [SEP] q2" strings (segment ids 0)',
        "bp": "fine-tuning, early stopping",
        "probe": "frozen encoder + I-ELM (k = 0)",
        **{f"eft_pairs_k{k}": f"EFT k = {k}, (q1, q2) pairs" for k in ks},
    }
    rows = [
        [
            names[name],
            r["test_accuracy"],
            r["train_seconds"],
            r["time_ratio_to_bp"],
            r.get("p_value_vs_bp"),
        ]
        for name, r in results.items()
    ]
    lines = [
        "# Sentence pairs (`benchmarks/text_pairs.py`)",
        "",
        machine_markdown(payload["machine"]),
        f"- task: {payload['task']}; pairs: {sizes}; seed {args.seed}; embedded encoder; "
        f"fine-tuning trained {results['bp']['bp_epochs']} epochs (best: "
        f"{results['bp']['bp_best_epoch']})",
        "",
        markdown_table(["method", "test accuracy", "train s", "ratio to bp", "p (worse)"], rows),
    ]
    write_results("text_pairs_trec", payload, "\n".join(lines))
    print("\n".join(lines[-len(rows) - 2 :]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
