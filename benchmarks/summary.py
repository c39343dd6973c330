"""Summary table of every committed ``results/bench_<dataset>.json`` (bench_eft.py runs).

    python benchmarks/summary.py        # writes results/summary.md and prints it

One row per dataset: the baseline's and EFT's test scores and training times, the ratios
against the issue's targets (EFT <= 0.30x, fused <= 0.25x, not significantly worse or within
1.0 point; I-ELM stage <= 0.30 and fused overhead < 0.05 of one BP epoch; I-ELM head >= 10x
faster than LogisticRegression and at most 0.5 points worse), each marked met or missed.
A second table takes the timing noise out of the time ratios (:func:`noise_rows`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, rule_choice_results, tuned_apart  # noqa: E402

ORDER = ("meld", "trec", "sst2", "imdb", "ag_news")


def _quality(method: dict, bp: dict, metric: str) -> tuple[str, bool]:
    """Score difference to the baseline (positive: better) and whether the target holds."""
    sign = -1.0 if metric == "error" else 1.0
    delta = sign * (method["test_score"] - bp["test_score"])
    ok = method["p_value_vs_bp"] >= 0.05 or delta >= -1.0
    return f"{delta:+.2f} (p={method['p_value_vs_bp']:.3f})", ok


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _other_baselines(methods: dict) -> str:
    """Fine-tuning at other learning rates (bench_eft.py --extra-baseline-learning-rates)."""
    cells = [
        f"{m['test_score']:.2f} (lr {m['hyper_parameters']['learning_rate']:g}, "
        f"{m['train_seconds']:.0f} s, {m['bp_epochs_run']} ep)"
        for name, m in methods.items()
        if name.startswith("bp_lr")
    ]
    return "; ".join(cells) or "-"


def _default_head(head: dict) -> str:
    """The default head (n_hidden 1000, C 1) beside a tuned one, when the run has both."""
    default = head.get("ielm_default_head")
    if not default:
        return ""
    return f" (nh 1000, C 1: {head['train_seconds'] / max(default['fit_seconds'], 1e-9):.1f}x)"


def bench_runs() -> dict[str, dict]:
    """Every committed bench_eft.py run, by name, in dataset order."""
    paths = sorted(RESULTS_DIR.glob("bench_*.json"))
    runs = {p.stem.removeprefix("bench_"): json.loads(p.read_text()) for p in paths}
    runs = {k: v for k, v in runs.items() if "bp" in v.get("methods", {})}

    def order(name: str) -> tuple[int, str]:
        dataset = runs[name].get("dataset", name)
        return (ORDER.index(dataset) if dataset in ORDER else 99, name)

    return {name: runs[name] for name in sorted(runs, key=order)}


# The project's 2-core machine was an AMD EPYC for the first sessions' runs; later sessions
# got other CPUs, so rows name the device when it is not this one.
USUAL_CPU = "AMD EPYC"


def _label(name: str, data: dict) -> str:
    """The run's name, with the GPU or the other CPU it ran on (else the 2-core AMD EPYC)."""
    machine = data.get("machine", {})
    if machine.get("gpu"):
        return f"{name} ({machine['gpu']})"
    cpu = machine.get("cpu_model")
    isa = machine.get("cpu_instruction_set") or {}  # recorded from December 2026 on
    if isa.get("native_bf16") is False:  # the same model name, without AVX-512
        cpu = f"{cpu}, {isa.get('isa')}, no native bf16"
    other = cpu and cpu != USUAL_CPU
    return f"{name} ({cpu}, {machine.get('usable_cores')} cores)" if other else name


def noise_rows() -> list[list[str]]:
    """EFT's time ratio with its BP epochs counted at fine-tuning's mean epoch of the same run.

    A BP epoch of EFT and one of fine-tuning do the same work (same data, batch, length), yet
    their measured times differ by up to about 12 % on this machine, in either direction. This
    ratio takes that difference out: ``(k * e + feature pass + head) / fine-tuning's time``,
    with ``e`` fine-tuning's time divided by its epochs. Both times are training epochs only:
    fine-tuning's validation passes are timed apart and not counted (in its favour).
    """
    out = []
    for name, data in bench_runs().items():
        m = data["methods"]
        bp, eft, fused = m["bp"], m["eft"], m["eft_fused"]
        k = max(eft["hyper_parameters"]["bp_epochs"], 1)
        epoch = bp["train_seconds"] / bp["bp_epochs_run"]
        eft_epoch = eft["phases"]["bp"] / k
        fused_epoch = fused["phases"]["bp"] / k
        eft_ratio, fused_ratio = (
            (k * epoch + method["phases"]["feedforward"] + method["phases"]["elm"])
            / bp["train_seconds"]
            for method in (eft, fused)
        )
        out.append(
            [
                _label(name, data),
                f"{epoch:.1f} s",
                f"{eft_epoch:.1f} s ({eft_epoch / epoch:.2f}), fused {fused_epoch:.1f} s "
                f"({fused_epoch / epoch:.2f})",
                f"{eft['time_ratio_to_bp']:.3f} -> {eft_ratio:.3f} {_mark(eft_ratio <= 0.30)}",
                f"{fused['time_ratio_to_bp']:.3f} -> {fused_ratio:.3f} "
                f"{_mark(fused_ratio <= 0.25)}",
            ]
        )
    return out


def rows() -> list[list[str]]:
    out = []
    for name, data in bench_runs().items():
        m, metric = data["methods"], data["metric"]
        bp, eft, fused, probe = m["bp"], m["eft"], m["eft_fused"], m["probe"]
        head = m["logreg_head"]
        eft_quality, eft_ok = _quality(eft, bp, metric)
        fused_quality, fused_ok = _quality(fused, bp, metric)
        hp = eft["hyper_parameters"]
        tuning = data.get("tuning")
        chosen = f"tuned: {tuning.get('selection', 'best')}" if tuning else "untuned"
        sign = -1.0 if metric == "error" else 1.0
        head_delta = sign * (head["ielm_head_test_score"] - head["test_score"])
        head_ok = head["speedup_ielm_over_logreg"] >= 10 and head_delta >= -0.5
        epoch = eft["phases"]["bp"] / max(hp["bp_epochs"], 1)  # one BP epoch of EFT's run
        stage = (eft["phases"]["feedforward"] + eft["phases"]["elm"]) / epoch
        # beyond its BP epochs: the head, and the feature pass of fused_fraction < 1
        fused_extra = fused["phases"]["elm"] + fused["phases"]["feedforward"]
        overhead = fused_extra / (fused["phases"]["bp"] / max(hp["bp_epochs"], 1))
        fraction = fused["hyper_parameters"].get("fused_fraction", 1.0)
        out.append(
            [
                _label(name, data),
                metric,
                f"{data['sizes']['train']:,}",
                f"{bp['test_score']:.2f} ({bp['train_seconds']:.0f} s, {bp['bp_epochs_run']} ep, "
                f"best {bp['bp_best_epoch']}, lr {bp['hyper_parameters']['learning_rate']:g})",
                f"{eft['test_score']:.2f} (k={hp['bp_epochs']} {chosen}, nh {hp['n_hidden']}, "
                f"C {hp['C']:g}, lr {hp['learning_rate']:g})",
                f"{eft['time_ratio_to_bp']:.3f} {_mark(eft['time_ratio_to_bp'] <= 0.30)} / "
                f"{eft['time_ratio_to_bp_best']:.2f}",
                f"{eft_quality} {_mark(eft_ok)}",
                f"{fused['test_score']:.2f}"
                + (f" (fraction {fraction:g})" if fraction < 1 else ""),
                f"{fused['time_ratio_to_bp']:.3f} {_mark(fused['time_ratio_to_bp'] <= 0.25)}",
                f"{fused_quality} {_mark(fused_ok)}",
                f"{stage:.3f} {_mark(stage <= 0.30)}",
                f"{overhead:.3f} {_mark(overhead < 0.05)}",
                f"{probe['test_score']:.2f}",
                _other_baselines(m),
                f"{head['speedup_ielm_over_logreg']:.1f}x, {head_delta:+.2f} "
                f"{_mark(head_ok)}" + _default_head(head),
            ]
        )
    return out


def selection_rows() -> list[list[str]]:
    """Each tuning rule's choice on every committed tuned run's validation curves.

    The same tuning tables (validation scores of every k x ``n_hidden`` x ``C``) give the
    choice of every ``--tune-selection``, so the rules can be compared without retraining;
    only the rule in the run's name was trained. Each cell: k, ``n_hidden``, ``C`` and the
    validation score of that choice (the best's, for comparison, in the first), and its test
    score where the run tested it (the rule used; since the rules' heads at EFT's k were tested
    on EFT's features, ``ielm_heads_by_selection``, those too), else where
    ``benchmarks/rule_choice.py`` trained it afterwards ("test X, apart": not side by side with
    the run's fine-tuning). A tested choice's score goes to every rule that picks the same k
    and head, including rules added after the run. A run trained with a given k, ``n_hidden``
    and ``C`` is listed when ``rule_choice.py --tune`` tuned it afterwards (rule used:
    "given"); a rule whose choice is the given one gets the run's EFT test score.
    """
    from eft.tuning import SELECTIONS, choose

    out = []
    for name, data in bench_runs().items():
        rule_choices = rule_choice_results(name)  # the choices rule_choice.py trained afterwards
        tuning = data.get("tuning") or tuned_apart(name, rule_choices)[0]
        if not tuning.get("epochs"):
            continue
        rows, scoring = tuning["epochs"], tuning.get("scoring", "accuracy")
        n_eval = data["sizes"]["validation"]
        used = tuning.get("selection", "best") if data.get("tuning") else "given"
        head = data["methods"]["logreg_head"]
        in_run = {  # the test score of every choice the run tested, as printed
            selection: f"{h['test_score']:.2f}"
            for selection, h in head.get("ielm_heads_by_selection", {}).items()
        }
        in_run.setdefault(used, f"{data['methods']['eft']['test_score']:.2f}")
        apart = {
            other: f"{result['test_score']:.2f}, apart" for other, result in rule_choices.items()
        }
        choices = {selection: choose(rows, n_eval, scoring, selection) for selection in SELECTIONS}
        trained = {  # the EFT model each rule's choice gives: its encoder and head
            selection: _model_key(row, params) for selection, (row, _, params, _) in choices.items()
        }
        if used == "given":
            trained[used] = _given_model(data["methods"]["eft"]["hyper_parameters"])
        tested = {}  # every rule gets the score of a tested choice that is the same model
        for selection in SELECTIONS:
            for scores in (in_run, apart):  # the run's own tests first
                same = [other for other in scores if trained[other] == trained[selection]]
                if same and selection not in tested:
                    tested[selection] = scores[same[0]]
        cells = []
        for selection in SELECTIONS:
            row, score, params, standard_error = choices[selection]
            cells.append(
                f"k={row['epoch']}, nh {params['n_hidden']}, C {params['C']:g}: {100 * score:.1f}"
                + (f" (test {tested[selection]})" if selection in tested else "")
            )
        out.append([_label(name, data), used, f"{100 * standard_error:.2f}", *cells])
    return out


def _seed(name: str) -> int:
    """A run's seed: N in a ``_seedN`` name, else 42 (bench_eft.py's default)."""
    tail = name.rsplit("_seed", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 42


def seed_rows(selection: str = "one_se") -> list[list[str]]:
    """Every dataset's runs tuned with one rule, averaged over seeds, as the paper averages runs.

    Only CPU runs that train in float32 (a bf16 feature pass is allowed: it moves scores by
    hundredths), one row per dataset and size; the runs of one seed (repeats, float32 or bf16
    feature pass) are averaged first, so every seed weighs the same. Differences are EFT minus
    fine-tuning (positive: better); "seeds met" counts the seeds where the target holds on
    that average (within 1.0 point, or p >= 0.05 in each run; EFT <= 0.30x fine-tuning's
    time).
    """
    groups: dict[tuple, dict[int, list[dict]]] = {}
    for name, data in bench_runs().items():
        tuning = data.get("tuning")
        if not tuning or tuning.get("selection", "best") != selection:
            continue
        eft = data["methods"]["eft"]
        if data["machine"].get("gpu") or eft["hyper_parameters"].get("mixed_precision") == "bf16":
            continue
        key = (data["dataset"], data["metric"], tuple(sorted(data["sizes"].items())))
        groups.setdefault(key, {}).setdefault(_seed(name), []).append({"name": name, **data})
    out = []
    for (dataset, metric, sizes), by_seed in groups.items():
        sign = -1.0 if metric == "error" else 1.0
        per_seed = []
        for seed, runs in sorted(by_seed.items()):
            bp = [r["methods"]["bp"] for r in runs]
            eft = [r["methods"]["eft"] for r in runs]
            delta = sum(
                sign * (e["test_score"] - b["test_score"]) for e, b in zip(eft, bp, strict=True)
            ) / len(eft)
            ratio = sum(e["time_ratio_to_bp"] for e in eft) / len(eft)
            per_seed.append(
                {
                    "seed": seed,
                    "bp": sum(b["test_score"] for b in bp) / len(bp),
                    "eft": sum(e["test_score"] for e in eft) / len(eft),
                    "delta": delta,
                    "quality": delta >= -1.0 or min(e["p_value_vs_bp"] for e in eft) >= 0.05,
                    "ratio": ratio,
                    "time": ratio <= 0.30,
                    "k": sorted({e["hyper_parameters"]["bp_epochs"] for e in eft}),
                }
            )
        n = len(per_seed)
        mean = {f: sum(r[f] for r in per_seed) / n for f in ("bp", "eft", "delta", "ratio")}

        out.append(
            [
                dataset,
                f"{dict(sizes)['train']:,}",
                ", ".join(str(r["seed"]) for r in per_seed),
                f"{mean['bp']:.2f}",
                f"{mean['eft']:.2f}",
                f"{mean['delta']:+.2f} ({min(r['delta'] for r in per_seed):+.2f} to "
                f"{max(r['delta'] for r in per_seed):+.2f})",
                f"{sum(r['quality'] for r in per_seed)} of {n}",
                f"{mean['ratio']:.3f} ({min(r['ratio'] for r in per_seed):.3f} to "
                f"{max(r['ratio'] for r in per_seed):.3f})",
                f"{sum(r['time'] for r in per_seed)} of {n}",
                ", ".join(f"{r['seed']}: {'/'.join(map(str, r['k']))}" for r in per_seed),
            ]
        )
    return out


def _model_key(row: dict, params: dict) -> tuple:
    """The EFT model a tuning row (its BP run and epoch) and head parameters give."""
    return (row["learning_rate"], row["pooling"], row["epoch"], sorted(params.items()))


def _given_model(hyper_parameters: dict) -> tuple:
    """An untuned run's EFT model as a :func:`_model_key` (its pooling, activation and
    standardisation are EFTConfig's defaults: bench sets none)."""
    from eft import EFTConfig

    default = EFTConfig()
    params = {
        "learning_rate": hyper_parameters["learning_rate"],
        "pooling": default.pooling,
        "activation": default.activation,
        "standardize": default.standardize,
        "n_hidden": hyper_parameters["n_hidden"],
        "C": hyper_parameters["C"],
    }
    row = {**params, "epoch": hyper_parameters["bp_epochs"]}
    return _model_key(row, params)


def _markdown(headers: list[str], body: list[list[str]]) -> list[str]:
    table = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return table + ["| " + " | ".join(row) + " |" for row in body]


def main() -> int:
    headers = [
        "dataset",
        "metric",
        "train",
        "fine-tuning (time, epochs)",
        "EFT",
        "EFT time ratio (<= 0.30) / to bp's best",
        "EFT vs bp",
        "fused",
        "fused ratio (<= 0.25)",
        "fused vs bp",
        "I-ELM stage / BP epoch (<= 0.30)",
        "fused overhead / BP epoch (< 0.05)",
        "probe k=0",
        "fine-tuning at another lr",
        "I-ELM head vs LogReg: speed (>= 10x), score (>= -0.5)",
    ]
    body = rows()
    other = headers.index("fine-tuning at another lr")
    if all(row[other] == "-" for row in body):  # no run has one: drop the column
        headers.pop(other)
        body = [row[:other] + row[other + 1 :] for row in body]
    table = _markdown(headers, body)
    noise = _markdown(
        [
            "run",
            "fine-tuning's epoch (mean)",
            "EFT's BP epoch (/ fine-tuning's)",
            "EFT ratio: measured -> at fine-tuning's epoch (<= 0.30)",
            "fused ratio: measured -> at fine-tuning's epoch (<= 0.25)",
        ],
        noise_rows(),
    )
    selection = _markdown(
        [
            "run",
            "rule used",
            "standard error (points)",
            "best (the paper)",
            "one_se",
            "one_se_head",
            "one_se_epoch",
        ],
        selection_rows(),
    )
    seeds = _markdown(
        [
            "dataset",
            "train",
            "seeds",
            "fine-tuning (mean)",
            "EFT (mean)",
            "EFT - fine-tuning: mean (range)",
            "seeds met: quality",
            "EFT time ratio: mean (range)",
            "seeds met: <= 0.30",
            "k per seed",
        ],
        seed_rows(),
    )
    text = (
        "# EFT against fine-tuning, every committed `eft bench` run\n\n"
        "Made by `python benchmarks/summary.py` from `benchmarks/results/bench_*.json` "
        "(one row per run, named by dataset and tag, on a 2-core AMD EPYC CPU unless another "
        "CPU or a GPU is named, embedded "
        "all-MiniLM-L6-v2, one seed per run: 42, or N in the `_seedN` rows; "
        "machine, versions, command and notes are in each file). Scores are test scores in "
        "the dataset's metric (for error, lower is better; the difference column is signed "
        "so that positive is better); p is the paired-bootstrap p-value of 'EFT is worse'.\n\n"
        + "\n".join(table)
        + "\n\n## Timing noise\n\n"
        + " ".join(noise_rows.__doc__.split("\n\n")[1].split())
        + "\n\n"
        + "\n".join(noise)
        + "\n\n## The one-SE rule's runs averaged over seeds\n\n"
        + " ".join(seed_rows.__doc__.split("\n\n")[1].split())
        + "\n\n"
        + "\n".join(seeds)
        + "\n\n## What each tuning rule picks on the same validation curves\n\n"
        + " ".join(selection_rows.__doc__.split("\n\n")[1].split())
        + "\n\n"
        + "\n".join(selection)
        + "\n"
    )
    (RESULTS_DIR / "summary.md").write_text(text, "utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
