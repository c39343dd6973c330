"""`eft experiment` and `eft data` on the real data (skipped without EFT_DATA_DIR)."""

from __future__ import annotations

import json

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


def test_experiment_runs_rows_and_writes_paper_tables(data_dir, tiny_bert_dir, tmp_path):
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
