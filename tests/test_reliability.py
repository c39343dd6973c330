"""Reliability cases of docs/reliability.md not covered by the per-module tests."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pytest
import torch

from eft import EFTClassifier, EFTConfig, IELMClassifier, InputError
from eft.experiment import load_experiment
from tests.test_classifier import LABELS, TEXTS, _config
from tests.test_cli import _write_csv, run_eft


def _copy_model(source, target):
    shutil.copytree(source, target)
    return target


def test_pickle_weights_are_refused(tiny_bert_dir, tmp_path):
    model = _copy_model(tiny_bert_dir, tmp_path / "m")
    torch.save({"x": torch.zeros(1)}, model / "pytorch_model.bin")
    with pytest.raises(InputError, match="pickle files \\(pytorch_model.bin\\)"):
        EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)


def test_pickles_under_safetensors_names_are_refused(tiny_bert_dir, tmp_path):
    """transformers reads the shards a safetensors index names with torch.load (weights only)
    when their names do not end in .safetensors; a stub .safetensors passed the suffix check."""
    from safetensors.torch import load_file

    model = _copy_model(tiny_bert_dir, tmp_path / "m")
    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save(tensors, model / "model-00001-of-00001.safetensors.data")
    index = {
        "metadata": {},
        "weight_map": {k: "model-00001-of-00001.safetensors.data" for k in tensors},
    }
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    (model / "stub.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="stub.safetensors is not a safetensors file"):
        EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)
    (model / "stub.safetensors").unlink()
    # an index of .bin shards that are not there (a hub download of json and safetensors
    # files) is never read: not refused
    bin_index = {"metadata": {}, "weight_map": {"x": "pytorch_model-00001-of-00001.bin"}}
    good = _copy_model(tiny_bert_dir, tmp_path / "bin_index")
    (good / "pytorch_model.bin.index.json").write_text(json.dumps(bin_index))
    EFTClassifier(_config(good, bp_epochs=0)).fit(TEXTS[:8], LABELS[:8])
    with pytest.raises(
        InputError, match="names the weight file 'model-00001-of-00001.safetensors.data'"
    ):
        EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)
    torch.save(tensors, model / "model.safetensors")  # a pickle under the plain name
    (model / "model.safetensors.index.json").unlink()
    with pytest.raises(InputError, match="model.safetensors is not a safetensors file"):
        EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)
    shutil.copy(tiny_bert_dir / "model.safetensors", model / "model.safetensors")
    (model / "config.json").write_text("{oops")
    with pytest.raises(InputError, match="config.json is damaged"):
        EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)


def test_remote_code_needs_opt_in(tiny_bert_dir, tmp_path):
    model = _copy_model(tiny_bert_dir, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="trust_remote_code"):
        EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)


def test_files_cannot_turn_remote_code_on(tiny_bert_dir, tmp_path, monkeypatch):
    """A saved model's eft_config.json, a --config file or a checkpoint that says
    trust_remote_code: true (and names a model with custom code) turned it on for the next
    fit; only the caller's argument or flag does now."""
    from eft.cli import main

    remote = _copy_model(tiny_bert_dir, tmp_path / "remote")
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(config))
    out = (
        EFTClassifier(_config(tiny_bert_dir, bp_epochs=0))
        .fit(TEXTS, LABELS)
        .save_pretrained(tmp_path / "saved")
    )
    meta = json.loads((out / "eft_config.json").read_text())
    meta["config"].update(trust_remote_code=True, model=str(remote))
    (out / "eft_config.json").write_text(json.dumps(meta))
    loaded = EFTClassifier.from_pretrained(out)
    assert loaded.config.trust_remote_code is False
    with pytest.raises(InputError, match="needs custom code .* trust_remote_code=True"):
        loaded.fit(TEXTS, LABELS)  # a refit of the loaded model
    assert EFTClassifier.from_pretrained(out, trust_remote_code=True).config.trust_remote_code
    train = _write_csv(tmp_path / "train.csv", list(zip(TEXTS, LABELS, strict=True)))
    (tmp_path / "cfg.json").write_text(json.dumps(meta["config"]))
    argv = ["train", "--train", str(train), "--config", str(tmp_path / "cfg.json")]
    assert main([*argv, "--output", str(tmp_path / "m"), "--quiet"]) == 2
    # a checkpoint's config: eft train --resume takes the flag of its own command line
    checkpoint = tmp_path / "m.checkpoint"
    argv = ["train", "--train", str(train), "--model", str(tiny_bert_dir), "--bp-epochs", "2"]
    argv += ["--batch-size", "32", "--device", "cpu", "--output", str(tmp_path / "m"), "--quiet"]
    import eft.backprop

    save_checkpoint = eft.backprop.save_checkpoint

    def save_then_stop(folder, epoch, *args, **kwargs):
        save_checkpoint(folder, epoch, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(eft.backprop, "save_checkpoint", save_then_stop)
    assert main(argv) == 130
    monkeypatch.setattr(eft.backprop, "save_checkpoint", save_checkpoint)
    state = json.loads((checkpoint / "checkpoint.json").read_text())
    state["config"].update(trust_remote_code=True, model=str(remote))
    state["cli_args"].update(trust_remote_code=True, model=str(remote))
    (checkpoint / "checkpoint.json").write_text(json.dumps(state))
    assert main(["train", "--resume", str(checkpoint), "--quiet"]) == 2


def test_output_folder_that_is_not_a_model_is_refused_before_training(tiny_bert_dir, tmp_path):
    train = _write_csv(tmp_path / "train.csv", list(zip(TEXTS, LABELS, strict=True)))
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_eft(
        "train", "--train", str(train), "--model", str(tiny_bert_dir), "--output", str(out)
    )
    assert result.returncode == 2 and "is not an eft model folder" in result.stderr
    assert (out / "notes.txt").read_text() == "keep me"


def test_non_finite_encoder_features_stop_with_a_clear_error(tiny_bert_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    model = _copy_model(tiny_bert_dir, tmp_path / "m")
    weights = load_file(model / "model.safetensors")
    key = next(k for k in weights if k.endswith("LayerNorm.weight") and "layer.1." in k)
    weights[key] = torch.full_like(weights[key], float("inf"))
    save_file(weights, model / "model.safetensors")
    with pytest.raises(InputError, match="non-finite features for 64 text"):
        EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)
    import eft.classifier  # the GPU path reads one device-side flag per pass instead
    import eft.ielm

    with monkeypatch.context() as patch:
        patch.setattr(eft.classifier, "_defers_host_checks", lambda device: True)
        patch.setattr(eft.ielm, "_keeps_checks_on_device", lambda X: True)
        with pytest.raises(InputError, match="non-finite features for some text"):
            EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)


def test_unknown_configuration_fields_are_named(tmp_path):
    with pytest.raises(InputError, match="Unknown EFT configuration field\\(s\\): n_hiden"):
        EFTConfig.from_dict({"n_hiden": 10})
    spec = tmp_path / "bad.toml"
    spec.write_text('dataset = "trec"\nmetric = "accuracy"\n[[rows]]\nname = "x"\nbp_epoch = 1\n')
    with pytest.raises(InputError, match="bp_epoch"):
        load_experiment(spec)
    # rows are kept and their predictions written by name: two rows may not share one
    for second in ("EFT", "EFT [k=1]"):
        spec.write_text(
            'dataset = "trec"\nmetric = "accuracy"\n[[rows]]\nname = "EFT (k=1)"\n'
            f'[[rows]]\nname = "EFT"\n[[rows]]\nname = "{second}"\n'
        )
        match = "the same name" if second == "EFT" else "names that give the same file name"
        with pytest.raises(InputError, match=match):
            load_experiment(spec)


def test_default_learning_rate_depends_on_the_method():
    # EFT's brief BP stage defaults to a higher rate than standard fine-tuning
    assert EFTConfig().learning_rate == 2e-4
    assert EFTConfig(method="bp").learning_rate == 5e-5
    assert EFTConfig(method="bp", learning_rate=1e-5).learning_rate == 1e-5
    saved = EFTConfig().to_dict()
    assert saved["learning_rate"] == 2e-4  # saved configurations hold the rate that was used
    assert EFTConfig.from_dict({**saved, "method": "bp"}).learning_rate == 2e-4
    for bad in (0.0, -1e-5, "fast"):
        with pytest.raises(InputError, match="learning_rate must be a number > 0"):
            EFTConfig(learning_rate=bad)
    # a rate left at its default follows a changed method (it stayed at 2e-4 for the baseline)
    from eft import EFTClassifier

    assert EFTConfig().replace(method="bp").learning_rate == 5e-5
    assert EFTClassifier(method="bp").config.learning_rate == 5e-5
    assert EFTClassifier().set_params(method="bp").config.learning_rate == 5e-5
    assert EFTClassifier(EFTConfig(method="bp")).set_params(method="eft").config.learning_rate == (
        2e-4
    )
    chosen = EFTClassifier(learning_rate=1e-5).set_params(method="bp")  # a chosen rate stays
    assert chosen.config.learning_rate == 1e-5
    assert chosen.set_params(method="eft").config.learning_rate == 1e-5
    from sklearn.base import clone

    assert clone(EFTClassifier()).set_params(method="bp").config.learning_rate == 5e-5
    # every parameter given back as get_params gives it leaves the default a default
    again = EFTClassifier()
    again.set_params(**again.get_params())
    assert again.set_params(method="bp").config.learning_rate == 5e-5
    # the default's value given with another method is chosen for that method, and a value
    # given on its own stays chosen, whatever it equals
    assert EFTConfig().replace(learning_rate=2e-4, method="bp").learning_rate == 2e-4
    pinned = EFTClassifier(learning_rate=2e-4).set_params(method="bp")
    assert pinned.config.learning_rate == 2e-4
    assert EFTClassifier().get_params()["learning_rate"] is None  # the method's default
    assert pinned.get_params()["learning_rate"] == 2e-4


def test_configuration_kinds_and_files_are_named(tmp_path):
    bad = [
        ({"batch_size": "16"}, "batch_size must be an integer, got '16' \\(str\\)"),
        ({"n_hidden": None}, "n_hidden must be an integer"),
        ({"bp_epochs": True}, "bp_epochs must be an integer"),
        ({"C": "1"}, "C must be a number"),
        ({"standardize": "yes"}, "standardize must be true or false"),
        ({"pooling": ["cls"]}, "pooling must be a string"),
        ({"early_stopping_patience": 0}, "early_stopping_patience must be an integer >= 1"),
        ({"class_weight": ["a"]}, "class_weight must be null"),
    ]
    for values, message in bad:
        with pytest.raises(InputError, match=message):
            EFTConfig.from_dict(values)
    assert EFTConfig(n_hidden=np.int64(64), C=np.float32(2.0)).n_hidden == 64  # numpy values
    path = tmp_path / "config.json"
    for content, message in [
        (b'[{"bp_epochs": 1}]', "must hold a JSON object of EFT fields"),
        (b'"eft"', "must hold a JSON object"),
        (b'{"model": "caf\xe9"}', "Cannot read configuration"),  # Latin-1, not UTF-8
        (b'{"bp_epochs": 1', "Cannot read configuration"),
    ]:
        path.write_bytes(content)
        with pytest.raises(InputError, match=message):
            EFTConfig.from_json(path)
    path.write_bytes(b'\xef\xbb\xbf{"config": {"bp_epochs": 2}}')  # a BOM, as data files may
    assert EFTConfig.from_json(path).bp_epochs == 2


def test_constant_features_with_standardisation():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6))
    X[:, 2] = 5.0  # a constant column
    y = (X[:, 0] > 0).astype(int)
    model = IELMClassifier(n_hidden=50, standardize=True, random_state=0).fit(X, y)
    assert np.isfinite(model.decision_function(X)).all()
    assert (model.predict(X) == y).mean() > 0.9


def test_extreme_imbalance_and_balanced_weights():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2000, 8))
    y = np.zeros(2000, dtype=int)
    minority = np.argsort(X[:, 0])[-20:]  # 1 % positives, at the far end of feature 0
    y[minority] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numerical warnings on this data
        plain = IELMClassifier(n_hidden=100, random_state=0).fit(X, y)
        balanced = IELMClassifier(n_hidden=100, class_weight="balanced", random_state=0).fit(X, y)
    assert np.isfinite(plain.decision_function(X)).all()
    recall = lambda m: (m.predict(X)[y == 1] == 1).mean()  # noqa: E731
    assert recall(balanced) > recall(plain)
    assert recall(balanced) >= 0.9


def test_damaged_saves_are_refused_naming_the_file(tiny_bert_dir, tmp_path):
    """A saved model changed after its save loaded silently (a missing encoder weight
    initialised at random, a NaN or reshaped head) or failed deep in torch at the first
    prediction; each is now one InputError naming the file (review I, F3-F6)."""
    from safetensors.torch import load_file, save_file

    saved = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    good = saved.save_pretrained(tmp_path / "good")
    baseline = EFTClassifier(_config(tiny_bert_dir, bp_epochs=1, method="bp")).fit(TEXTS, LABELS)
    good_bp = baseline.save_pretrained(tmp_path / "good_bp")

    def edit_tensors(name, change):
        def damage(folder):
            tensors = load_file(folder / name)
            change(tensors)
            save_file(tensors, folder / name, metadata=_metadata(good / name))

        return damage

    def edit_json(name, change):
        def damage(folder):
            document = json.loads((folder / name).read_text())
            change(document)
            (folder / name).write_text(json.dumps(document))

        return damage

    def truncate(name):
        def damage(folder):
            data = (folder / name).read_bytes()
            (folder / name).write_bytes(data[: len(data) // 2])

        return damage

    def drop_layer(config):
        config["num_hidden_layers"] = 1

    head = "elm_head.safetensors"
    cases = [
        (edit_tensors("model.safetensors", lambda t: t.pop(sorted(t)[-1])), "missing keys: "),
        (edit_json("config.json", drop_layer), "unexpected keys: encoder.layer.1."),
        (truncate("model.safetensors"), "incomplete or damaged: SafetensorError"),
        (edit_tensors(head, lambda t: t["output_weights"].fill_(float("nan"))), "holds NaN"),
        (
            edit_tensors(head, lambda t: t.update(output_weights=torch.zeros(3, 48))),
            "'output_weights' is (3, 48) torch.float32, but the head's metadata",
        ),
        (edit_tensors(head, lambda t: t.pop("bias")), "the tensor 'bias' is missing"),
        (truncate(head), "is damaged (not a readable safetensors file"),
        (edit_json("eft_config.json", lambda m: m.update(labels="neg")), "'labels' must list"),
        (
            edit_json("eft_config.json", lambda m: m.update(label_type="int")),
            "each an integer (its 'label_type' is 'int')",
        ),
        (edit_json("eft_config.json", lambda m: m.update(config=[])), "'config' must be an"),
    ]

    def without_record(folder):  # the checks below the digests (saves before the record)
        meta = json.loads((folder / "eft_config.json").read_text())
        meta.pop("files")
        (folder / "eft_config.json").write_text(json.dumps(meta))
        return folder

    for number, (damage, message) in enumerate(cases):
        folder = without_record(shutil.copytree(good, tmp_path / f"damaged{number}"))
        damage(folder)
        with pytest.raises(InputError, match=re.escape(message)):
            EFTClassifier.from_pretrained(folder)
    folder = without_record(shutil.copytree(good_bp, tmp_path / "damaged_bp"))
    linear = load_file(folder / "linear_head.safetensors")
    save_file(
        {**linear, "bias": torch.full_like(linear["bias"], float("inf"))},
        folder / "linear_head.safetensors",
    )
    with pytest.raises(
        InputError, match="linear_head.safetensors is damaged: its weights hold NaN"
    ):
        EFTClassifier.from_pretrained(folder)
    # the intact folders still load, and predict as saved
    np.testing.assert_array_equal(
        EFTClassifier.from_pretrained(good).predict(TEXTS), saved.predict(TEXTS)
    )
    np.testing.assert_array_equal(
        EFTClassifier.from_pretrained(good_bp).predict(TEXTS), baseline.predict(TEXTS)
    )


def _metadata(path):
    """A safetensors file's metadata (the head's eft JSON)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return handle.metadata()


def test_a_save_records_its_files_and_a_load_checks_them(tiny_bert_dir, tmp_path, monkeypatch):
    """Flipped bytes in a safetensors file loaded as another model (safetensors has no
    checksum); a save over a model folder deleted the user's files in it; an output that
    cannot be written failed after the training (review I, F4, F8, F9)."""
    from eft.cli import main

    clf = EFTClassifier(_config(tiny_bert_dir, bp_epochs=0)).fit(TEXTS, LABELS)
    out = clf.save_pretrained(tmp_path / "m")
    meta = json.loads((out / "eft_config.json").read_text())
    names = {p.name for p in out.iterdir()} - {"eft_config.json"}
    assert set(meta["files"]) == names and all(
        len(f["sha256"]) == 64 for f in meta["files"].values()
    )
    weights = out / "model.safetensors"
    original = weights.read_bytes()
    flipped = bytearray(original)
    flipped[-100] ^= 0xFF  # in the data area: still a valid safetensors file
    weights.write_bytes(bytes(flipped))
    with pytest.raises(InputError, match="model.safetensors was changed after it was written"):
        EFTClassifier.from_pretrained(out)
    weights.write_bytes(original)
    older = {k: v for k, v in meta.items() if k != "files"}  # saves before the record
    (out / "eft_config.json").write_text(json.dumps(older))
    assert EFTClassifier.from_pretrained(out).predict(TEXTS).tolist() == clf.predict(TEXTS).tolist()
    (out / "eft_config.json").write_text(json.dumps(meta))
    # a save over a model folder that holds other files is refused, the files kept
    (out / "NOTES.md").write_text("mine")
    with pytest.raises(InputError, match=r"also holds files its save did not write \(NOTES.md\)"):
        clf.save_pretrained(out)
    assert (out / "NOTES.md").read_text() == "mine"
    (out / "NOTES.md").unlink()
    for hidden in (".git/HEAD", ".gitattributes"):  # hidden ones go with the folder too
        (out / hidden).parent.mkdir(exist_ok=True)
        (out / hidden).write_text("mine")
        with pytest.raises(InputError, match=f"its save did not write \\({re.escape(hidden)}\\)"):
            clf.save_pretrained(out)
        (out / hidden).unlink()
    shutil.rmtree(out / ".git")
    (out / ".DS_Store").write_text("Finder")  # litter that may go
    (out / "sub").mkdir()  # a save that writes a subfolder (chat templates): its own files
    (out / "sub" / "t.jinja").write_text("{{ x }}")
    meta = json.loads((out / "eft_config.json").read_text())
    meta["files"]["sub/t.jinja"] = {"bytes": 7, "sha256": "0" * 64}
    (out / "eft_config.json").write_text(json.dumps(meta))
    clf.save_pretrained(out)  # its own files only: replaced
    # outputs that cannot be written are refused before any training
    train = _write_csv(tmp_path / "train.csv", list(zip(TEXTS, LABELS, strict=True)))
    (tmp_path / "afile").write_text("x")
    argv = ["train", "--train", str(train), "--model", str(tiny_bert_dir), "--quiet"]
    trained = []
    monkeypatch.setattr(EFTClassifier, "fit", lambda *a, **k: trained.append(1))
    assert main([*argv, "--output", str(tmp_path / "afile" / "m")]) == 2
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # a link's save goes beside what it points to: that is the place to probe
    from eft.atomic import check_writable

    (tmp_path / "target_parent").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target_parent" / "m")
    probed = []
    mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **k: probed.append(k["dir"]) or mkdtemp(**k))
    check_writable(tmp_path / "link")
    assert probed == [tmp_path / "target_parent"]
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    assert main([*argv, "--output", str(tmp_path / "ro" / "m")]) == 2
    assert (
        main(["evaluate", str(out), "--data", str(train), "--metrics", str(tmp_path / "x.json")])
        == 2
    )
    assert not trained


def _other_architecture(tiny_bert_dir, folder, config):
    """A tiny random model of ``config``'s architecture with the tiny BERT's tokenizer."""
    from transformers import AutoModel

    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert_dir / name, folder / name)
    return folder


def test_architectures_that_would_train_wrong_are_refused(tiny_bert_dir, tmp_path):
    """A decoder-only model with first-token pooling gave every text the same feature (all
    predictions 1/3 on Llama), an encoder-decoder failed deep in its decoder, XLNet's -1
    position limit became max_length -1, MPNet's position offset was not subtracted, and a
    max_length the special tokens fill kept no text (review H, F1-F5)."""
    from transformers import AutoModel, GPT2Config, MPNetConfig, MPNetModel, T5Config, XLNetConfig

    from eft.encoder import model_max_length

    tokenizer_size = 200  # the tiny BERT's vocabulary fits
    small = dict(vocab_size=tokenizer_size)
    gpt2 = _other_architecture(
        tiny_bert_dir,
        tmp_path / "gpt2",
        GPT2Config(**small, n_embd=32, n_layer=1, n_head=2, n_positions=64),
    )
    with pytest.raises(
        InputError,
        match=r"\(gpt2\) is a causal \(decoder-only\) model: its first token sees only .*mean",
    ):
        EFTClassifier(_config(gpt2, bp_epochs=0)).fit(TEXTS, LABELS)
    mean = EFTClassifier(_config(gpt2, bp_epochs=0, pooling="mean")).fit(TEXTS, LABELS)
    assert mean.predict(TEXTS[:2]).shape == (2,)
    # decided by what position 0 sees, not by the model type: XLNet and BERT-generation are
    # bidirectional, although their types also have causal-LM classes
    from transformers import BertGenerationConfig, BertGenerationEncoder, XLNetModel

    from eft.encoder import first_position_sees_the_text

    torch.manual_seed(0)
    xlnet = XLNetModel(XLNetConfig(**small, d_model=32, n_layer=1, n_head=2, d_inner=64))
    generation = BertGenerationEncoder(
        BertGenerationConfig(
            **small,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    assert first_position_sees_the_text(xlnet) and first_position_sees_the_text(generation)
    assert not first_position_sees_the_text(AutoModel.from_pretrained(gpt2))
    t5 = _other_architecture(
        tiny_bert_dir,
        tmp_path / "t5",
        T5Config(**small, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2),
    )
    with pytest.raises(InputError, match=r"is an encoder-decoder model \(t5\); eft fine-tunes"):
        EFTClassifier(_config(t5, bp_epochs=0, pooling="mean")).fit(TEXTS, LABELS)

    class Backbone(torch.nn.Module):  # a config without a position limit (XLNet's -1)
        config = XLNetConfig(**small, d_model=32, n_layer=1, n_head=2)

    assert Backbone.config.max_position_embeddings == -1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no "exceeds what the model accepts" warning
        assert model_max_length(64, Backbone(), None) == 64
    mpnet = MPNetModel(
        MPNetConfig(
            **small,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=130,
        )
    )
    with pytest.warns(UserWarning, match="using 128"):  # positions start after padding_idx 1
        assert model_max_length(512, mpnet, None) == 128
    # special tokens that fill max_length: refused, not trained on empty inputs
    with pytest.raises(
        InputError, match="max_length 2 leaves no room for text: this tokenizer adds 2"
    ):
        EFTClassifier(_config(tiny_bert_dir, bp_epochs=0, max_length=2)).fit(TEXTS, LABELS)
    pairs = [(t, t) for t in TEXTS]
    with pytest.raises(
        InputError, match="adds 3 special tokens to a text pair; use a max_length of at least 5"
    ):
        EFTClassifier(_config(tiny_bert_dir, bp_epochs=0, max_length=4)).fit(pairs, LABELS)


def test_tokenizers_eft_cannot_pad_with_or_that_pad_left(tiny_bert_dir, tmp_path):
    """A tokenizer with no special token at all gave a raw TypeError; a saved tokenizer that
    pads on the left served an exported graph [PAD] where CLS pooling reads (review H, F6,
    F8); a sentence-transformers folder with its model in a subfolder is named (F10)."""
    model = _copy_model(tiny_bert_dir, tmp_path / "left")
    settings = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**settings, "padding_side": "left"}))
    clf = EFTClassifier(_config(model, bp_epochs=0)).fit(TEXTS, LABELS)
    out = clf.save_pretrained(tmp_path / "saved")
    assert clf.tokenizer_.padding_side == "right"
    assert json.loads((out / "tokenizer_config.json").read_text())["padding_side"] == "right"
    older = tmp_path / "older"  # a save of an earlier eft that kept "left": right once loaded
    shutil.copytree(out, older)
    (older / "tokenizer_config.json").write_text(json.dumps({**settings, "padding_side": "left"}))
    meta = json.loads((older / "eft_config.json").read_text())
    del meta["files"]
    (older / "eft_config.json").write_text(json.dumps(meta))
    assert EFTClassifier.from_pretrained(older).tokenizer_.padding_side == "right"
    from eft.encoder import load_tokenizer

    bare = _copy_model(tiny_bert_dir, tmp_path / "bare")
    settings = json.loads((bare / "tokenizer_config.json").read_text())
    tokens = ("pad_token", "unk_token", "sep_token", "cls_token", "mask_token", "eos_token")
    (bare / "tokenizer_config.json").write_text(
        json.dumps(
            {**{k: v for k, v in settings.items() if k not in tokens}, **dict.fromkeys(tokens)}
        )
    )
    with pytest.raises(InputError, match="has no padding token \\(nor an eos, sep or unk"):
        load_tokenizer(str(bare))
    nested = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, nested / "0_Transformer")
    (nested / "modules.json").write_text("[]")
    with pytest.raises(InputError, match="in a subfolder: pass --model .*st/0_Transformer"):
        load_tokenizer(str(nested))


def test_a_hub_id_without_a_network_names_the_way_out(monkeypatch):
    """Offline, a hub id failed with transformers' first line only (helper H): the message
    now names a local folder and HF_HUB_OFFLINE."""
    import transformers

    from eft.encoder import load_tokenizer

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", unreachable)
    with pytest.raises(InputError, match="Cannot load --model org/model: We couldn't connect"):
        load_tokenizer("org/model")
    with pytest.raises(InputError, match="pass a local folder .* or set HF_HUB_OFFLINE=1"):
        load_tokenizer("org/model")
