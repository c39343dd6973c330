"""The BP stage (eft.backprop): layer-wise learning-rate decay, the losses."""

from __future__ import annotations

import pytest
import torch

from eft.backprop import EncoderWithLinearHead, _optimizer, layer_depths
from eft.encoder import TextEncoder, load_backbone
from eft.errors import InputError
from tests.test_classifier import LABELS, TEXTS, _config


def _model(model_dir) -> EncoderWithLinearHead:
    backbone, _, _ = load_backbone(str(model_dir))
    return EncoderWithLinearHead(TextEncoder(backbone), n_classes=3)


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_layer_depths_count_from_the_embeddings_to_the_head(fixture, request):
    model = _model(request.getfixturevalue(fixture))
    depths = layer_depths([name for name, _ in model.named_parameters()])
    assert depths["encoder.backbone.embeddings.word_embeddings.weight"] == 0
    assert depths["encoder.backbone.encoder.layer.0.attention.self.query.weight"] == 1
    assert depths["encoder.backbone.encoder.layer.1.output.dense.bias"] == 2
    assert depths["classifier.weight"] == depths["classifier.bias"] == 3  # 2 blocks + 1
    assert set(depths.values()) == {0, 1, 2, 3}


def test_layer_lr_decay_scales_each_group_by_its_depth(tiny_bert_dir):
    model = _model(tiny_bert_dir)
    base = _config(tiny_bert_dir, learning_rate=1e-3)
    plain = _optimizer(model, base)
    assert [g["lr"] for g in plain.param_groups] == [1e-3, 1e-3]  # off: the two usual groups
    assert [g["weight_decay"] for g in plain.param_groups] == [base.weight_decay, 0.0]

    decayed = _optimizer(model, _config(tiny_bert_dir, learning_rate=1e-3, layer_lr_decay=0.5))
    rate = {id(p): g["lr"] for g in decayed.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    expected = {
        "classifier.weight": 1e-3,
        "encoder.backbone.encoder.layer.1.output.dense.weight": 5e-4,
        "encoder.backbone.encoder.layer.0.output.dense.weight": 2.5e-4,
        "encoder.backbone.embeddings.word_embeddings.weight": 1.25e-4,
        "encoder.backbone.embeddings.LayerNorm.weight": 1.25e-4,
    }
    for name, lr in expected.items():
        assert rate[id(params[name])] == pytest.approx(lr), name
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(rate) == trainable  # every trainable parameter once, the frozen pooler not
    no_decay = {id(p) for g in decayed.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(params["encoder.backbone.embeddings.LayerNorm.weight"]) in no_decay
    assert id(params["classifier.bias"]) in no_decay
    assert id(params["classifier.weight"]) not in no_decay


def test_layer_lr_decay_keeps_the_lower_layers_near_their_pretrained_weights(tiny_bert_dir):
    from eft import EFTClassifier

    def moved(decay: float) -> tuple[float, float]:
        config = _config(
            tiny_bert_dir, method="bp", bp_epochs=1, learning_rate=1e-2, layer_lr_decay=decay
        )
        trained = EFTClassifier(config).fit(TEXTS, LABELS).model_.encoder.backbone.state_dict()
        initial = load_backbone(str(tiny_bert_dir))[0].state_dict()

        def change(key: str) -> float:
            return float((trained[key] - initial[key]).abs().max())

        return (
            change("embeddings.word_embeddings.weight"),
            change("encoder.layer.1.output.dense.weight"),
        )

    embeddings_off, top_off = moved(1.0)
    embeddings_on, top_on = moved(0.1)
    # Adam's steps scale with the rate: the top block trains at 0.1 of it, the embeddings
    # (two blocks further down) at 0.001
    assert 0.05 < top_on / top_off < 0.2
    assert embeddings_on / embeddings_off < 0.002


def test_layer_lr_decay_is_refused_where_the_blocks_have_no_index(tiny_bert_dir):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    with pytest.raises(InputError, match="layer_lr_decay=0.9 needs transformer blocks"):
        _optimizer(model, _config(tiny_bert_dir, layer_lr_decay=0.9))
    for bad in (0, 1.5, -0.1):
        with pytest.raises(InputError, match="layer_lr_decay must be in"):
            _config(tiny_bert_dir, layer_lr_decay=bad)


def _contrastive_by_loops(features, labels, temperature):
    """Khosla et al.'s Eq. 2 written out anchor by anchor."""
    import math

    z = torch.nn.functional.normalize(features.double(), dim=1)
    total, anchors = 0.0, 0
    for i in range(len(labels)):
        positives = [p for p in range(len(labels)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(
            math.exp(float(z[i] @ z[a]) / temperature) for a in range(len(labels)) if a != i
        )
        total += -sum(
            math.log(math.exp(float(z[i] @ z[p]) / temperature) / denominator) for p in positives
        ) / len(positives)
        anchors += 1
    return total / anchors


def test_supervised_contrastive_loss_is_khosla_eq2_and_rewards_clusters():
    from eft.backprop import supervised_contrastive_loss

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(12, 8, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 2, 2, 1, 0, 3, 1])  # label 3: no positive
    loss = supervised_contrastive_loss(features, labels, temperature=0.3)
    assert float(loss) == pytest.approx(_contrastive_by_loops(features, labels, 0.3), rel=1e-5)
    # features that cluster by label score lower than the same features shuffled
    centres = torch.randn(4, 8, generator=generator) * 3
    clustered = centres[labels] + 0.1 * torch.randn(12, 8, generator=generator)
    assert supervised_contrastive_loss(clustered, labels) < supervised_contrastive_loss(
        clustered[torch.randperm(12, generator=generator)], labels
    )
    # a batch without any pair of one label: 0, and still differentiable
    alone = torch.randn(3, 8, requires_grad=True)
    empty = supervised_contrastive_loss(alone, torch.tensor([0, 1, 2]))
    empty.backward()
    assert float(empty) == 0.0 and alone.grad is not None


def test_label_smoothing_and_contrastive_loss_change_the_bp_stage(tiny_bert_dir):
    from eft import EFTClassifier

    def train_loss(**options):
        config = _config(tiny_bert_dir, method="bp", bp_epochs=1, **options)
        return EFTClassifier(config).fit(TEXTS, LABELS).history_["bp_train_loss"][0]

    plain = train_loss()
    assert train_loss() == plain  # deterministic, so the differences below are the options'
    assert train_loss(label_smoothing=0.2) != plain
    assert train_loss(contrastive_weight=0.5) != plain
    for bad in ({"label_smoothing": 1.0}, {"contrastive_weight": -0.1}):
        with pytest.raises(InputError, match="must be in"):
            _config(tiny_bert_dir, **bad)
    with pytest.raises(InputError, match="contrastive_temperature must be > 0"):
        _config(tiny_bert_dir, contrastive_temperature=0.0)
