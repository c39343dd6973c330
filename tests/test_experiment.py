"""`eft experiment` and `eft data` on the real data (skipped without EFT_DATA_DIR)."""

from __future__ import annotations

import json

import pytest

from eft.experiment import format_tables, load_experiment, run_experiment
from tests.test_cli import run_eft


def test_data_command_prints_split_sizes(data_dir, tmp_path):
    result = run_eft("data", "trec", "--data-dir", str(data_dir), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["train"]["size"] == 5452 and summary["test"]["size"] == 500
    assert summary["test"]["labels"]["NUM"] == 113
    missing = run_eft("data", "meld", "--data-dir", str(tmp_path))
    assert missing.returncode == 2 and "train_sent_emo.csv" in missing.stderr
    nowhere = run_eft("data", "meld", "--data-dir", str(tmp_path / "nowhere"))
    assert nowhere.returncode == 2 and "data directory not found" in nowhere.stderr


def test_experiment_runs_rows_and_writes_paper_tables(
    data_dir, tiny_bert_dir, tmp_path, monkeypatch
):
    spec = tmp_path / "trec.toml"
    spec.write_text(
        'dataset = "trec"\nmetric = "accuracy"\ntitle = "tiny"\n'
        "[dataset_options]\nvalidation_fraction = 0.1\n"
        "[defaults]\nbatch_size = 16\nn_hidden = 64\nlearning_rate = 1e-3\n"
        '[[rows]]\nname = "EFT"\nbp_epochs = 1\n'
        '[[rows]]\nname = "FT"\nmethod = "bp"\nbp_epochs = 2\nbaseline = true\n'
    )
    experiment = load_experiment(spec)
    results = run_experiment(
        experiment,
        seeds=2,
        data_dir=str(data_dir),
        model=str(tiny_bert_dir),
        max_train=300,
        output=tmp_path / "out",
        progress=False,
    )
    eft, ft = results["rows"]
    assert results["sizes"] == {"train": 300, "validation": 545, "test": 500}
    assert len(eft["runs"]) == 2 and eft["runs"][0]["seed"] != eft["runs"][1]["seed"]
    assert 0 <= eft["score_mean"] <= 100 and eft["score_std"] >= 0
    assert "p_value" in eft["bootstrap_vs_baseline"]
    assert ft["bp_epochs_run"] == [2, 2]
    table = (tmp_path / "out" / "table.md").read_text()
    assert table == format_tables(results)
    assert "| EFT |" in table and "| FT (baseline) |" in table and "Table 6" in table
    predictions = (tmp_path / "out" / "eft_seed42.jsonl").read_text().splitlines()
    assert len(predictions) == 500
    # Interrupted after the baseline's first epoch at its second seed, the same call continues:
    # finished runs are kept, that run resumes from its checkpoint, and the results are those
    # of the uninterrupted run above.
    import eft.backprop
    import eft.experiment

    checkpoint = tmp_path / "again.checkpoint"
    save_checkpoint = eft.backprop.save_checkpoint

    def save_then_stop(folder, epoch, *args, **kwargs):
        save_checkpoint(folder, epoch, *args, **kwargs)
        if folder.name == "FT_seed43" and epoch == 1:
            raise KeyboardInterrupt

    def again():
        return run_experiment(
            experiment,
            seeds=2,
            data_dir=str(data_dir),
            model=str(tiny_bert_dir),
            max_train=300,
            output=tmp_path / "again",
            progress=False,
            checkpoint_dir=checkpoint,
        )

    monkeypatch.setattr(eft.backprop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        again()
    assert (checkpoint / "FT_seed43" / "checkpoint.json").is_file()
    monkeypatch.setattr(eft.backprop, "save_checkpoint", save_checkpoint)
    trained = []
    train_and_test = eft.experiment._train_and_test
    monkeypatch.setattr(
        eft.experiment,
        "_train_and_test",
        lambda config, *a: trained.append(config.seed) or train_and_test(config, *a),
    )
    resumed = again()
    assert trained == [43] and not checkpoint.exists()
    assert resumed["resumed"]["parts_from_earlier_process"] == [
        "EFT/seed42",
        "EFT/seed43",
        "FT/seed42",
    ]
    assert resumed["resumed"]["same_machine"] and len(resumed["resumed"]["processes"]) == 2
    assert resumed["rows"][1]["runs"][1]["continued_after_epoch"] == 1
    for row, row_again in zip(results["rows"], resumed["rows"], strict=True):
        assert [r["scores"] for r in row_again["runs"]] == [r["scores"] for r in row["runs"]]
        assert row_again.get("bootstrap_vs_baseline") == row.get("bootstrap_vs_baseline")
    assert (tmp_path / "again" / "ft_seed43.jsonl").read_text() == (
        tmp_path / "out" / "ft_seed43.jsonl"
    ).read_text()
    assert (
        "Resumed after an interruption (2 processes, same machine)"
        in (tmp_path / "again" / "table.md").read_text()
    )
    # fewer seeds into the same folder: the files of the seeds no longer run go, others stay
    (tmp_path / "again" / "eft_seed43.txt").write_text("mine")
    run_experiment(experiment, 1, str(data_dir), str(tiny_bert_dir), 300, tmp_path / "again", False)
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [
        "eft_seed42.jsonl",
        "eft_seed43.txt",
        "ft_seed42.jsonl",
        "results.json",
        "table.md",
    ]


def test_rows_that_need_validation_data_are_refused_before_any_training(
    data_dir, tmp_path, monkeypatch
):
    import eft.experiment
    from eft import InputError

    def no_training(*args, **kwargs):
        raise AssertionError("a row trained before the refusal")

    monkeypatch.setattr(eft.experiment, "_train_and_test", no_training)
    spec = tmp_path / "trec.toml"
    spec.write_text(
        'dataset = "trec"\nmetric = "accuracy"\n'  # TREC has no validation split of its own
        '[[rows]]\nname = "EFT"\nbp_epochs = 1\n'
        '[[rows]]\nname = "FT"\nmethod = "bp"\nbp_epochs = 3\nearly_stopping_patience = 1\n'
    )
    with pytest.raises(InputError, match="row 'FT' stops early .* validation_fraction"):
        run_experiment(load_experiment(spec), seeds=1, data_dir=str(data_dir), progress=False)
    spec.write_text('dataset = "trec"\nmetric = "accuracy"\n[[rows]]\nname = "EFT"\n')
    with pytest.raises(InputError, match="must be a positive integer, got 0"):  # was: every row
        run_experiment(load_experiment(spec), 1, str(data_dir), max_train=0, progress=False)


def test_experiment_files_are_checked_when_read(tmp_path):
    """A metric the tables cannot score (a KeyError after the first row had trained) and a
    baseline that is not a TOML boolean ("no" was read as true) are refused when read."""
    from eft import InputError

    spec = tmp_path / "e.toml"
    for body, message in (
        ('metric = "f1"\n[[rows]]\nname = "EFT"\n', "metric 'f1' is not one of accuracy"),
        (
            'metric = "accuracy"\n[[rows]]\nname = "FT"\nbaseline = "no"\n',
            "row 'FT' has baseline = 'no'; write true or false",
        ),
        (  # a file does not turn remote code on: the command line does
            'metric = "accuracy"\n[defaults]\ntrust_remote_code = true\n[[rows]]\nname = "E"\n',
            "trust_remote_code is not an experiment setting; .* --trust-remote-code",
        ),
    ):
        spec.write_text('dataset = "trec"\n' + body)
        with pytest.raises(InputError, match=message):
            load_experiment(spec)
    spec.write_text('dataset = "trec"\nmetric = "error"\n[[rows]]\nname = "FT"\nbaseline = true\n')
    assert load_experiment(spec).rows[0].baseline is True
    from eft.cli import main

    with pytest.raises(SystemExit) as exit_info:  # "mean_std needs at least one value" before
        main(["experiment", str(spec), "--seeds", "0"])
    assert exit_info.value.code == 2
