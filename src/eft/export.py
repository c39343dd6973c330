"""ONNX export of a fitted model: the fine-tuned encoder, the head and ``predict_proba``'s
calibration as one graph (Algorithm 1's final model, step 17, for serving without eft).

The graph takes ``input_ids`` and ``attention_mask`` (int64, batch x sequence; what the saved
model's tokenizer gives with ``padding=True, truncation=True, max_length=max_length_``; text
pairs as ``tokenizer(text, text_pair)`` encodes them; BERT's segment ids are derived inside
the graph, so ``token_type_ids`` is not an input). It returns ``scores``, every class's
(:meth:`~eft.EFTClassifier.decision_function`'s, which for two classes gives their
difference), and ``probabilities``
(:meth:`~eft.EFTClassifier.predict_proba`: ``softmax(scores / T)``, multi-label
``sigmoid((scores - t) / T)`` with each label's threshold t). The prediction is the argmax of
``scores`` (multi-label: every label whose probability passes 0.5). The labels and the other
facts a server needs are in the file's metadata (:data:`METADATA_KEYS`).

``quantize="int8"`` stores the weights of the graph's matrix products as 8-bit integers, one
scale per output channel, and quantizes their inputs on the fly (onnxruntime's dynamic
quantization): a quarter of the file and faster on CPUs, at some predictions changed (measure
on your own texts with :func:`check_onnx`; ``benchmarks/onnx_export.py`` for ours). The
inputs' scale is computed over each batch, so a text's int8 outputs depend a little on the
texts run with it.

Exporting needs the ``onnx`` and ``onnxscript`` packages (``pip install
'extreme-fine-tuning[onnx]'``), quantizing and checking the file need ``onnxruntime``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eft.encoder import pad_batch, sorted_batches, tokenize
from eft.errors import InputError

#: Metadata of the exported file: ``eft_labels`` (JSON list, the columns of the outputs),
#: ``eft_multi_label`` and ``eft_text_pairs`` ("true"/"false"), ``eft_max_length``,
#: ``eft_quantization`` ("none" or "int8").
METADATA_KEYS = (
    "eft_labels",
    "eft_multi_label",
    "eft_text_pairs",
    "eft_max_length",
    "eft_quantization",
)
#: Values of ``export_onnx``'s ``quantize`` (None: float32 weights).
QUANTIZATIONS = ("int8",)
# Above this many bytes of weights the file keeps them in a ``.data`` file beside it (ONNX's
# protobuf limit is 2 GiB).
_SINGLE_FILE_BYTES = 1_800_000_000


class _ScoresAndProbabilities(nn.Module):
    """The fitted model's scores and its ``predict_proba``, in float32."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model.model_
        self.multi_label = bool(getattr(model, "multi_label_", False))
        self.temperature = float(getattr(model, "temperature_", 1.0))
        threshold = model._threshold if self.multi_label else 0.0
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.float32))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.model(input_ids, attention_mask)
        if self.multi_label:
            return scores, torch.sigmoid((scores - self.threshold) / self.temperature)
        return scores, torch.softmax(scores / self.temperature, dim=-1)


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    opset_version: int | None = None,
    quantize: str | None = None,
) -> Path:
    """Write the fitted :class:`~eft.EFTClassifier` ``model`` to ``path`` as ONNX, atomically.

    One file while the weights fit under ONNX's 2 GiB limit, else the file and its weights in
    ``<name>.<digest>.data``, a name of their own, so that a graph never reads another
    export's weights (the old ones go once the new graph is in place). Traced in float32 on
    the model's device with ``torch.onnx.export`` (dynamo), dynamic in batch size and
    sequence length; ``quantize="int8"`` then quantizes the weights of its matrix products
    per channel (onnxruntime ``quantize_dynamic``).
    """
    model._check_fitted()
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise InputError(
            f"quantize must be one of {', '.join(QUANTIZATIONS)} (or None), got {quantize!r}."
        )
    try:
        import onnx  # noqa: F401  (the exporter's dependencies, named in the error)
        import onnxscript  # noqa: F401

        if quantize:
            import onnxruntime.quantization  # noqa: F401
    except ImportError as error:
        raise InputError(
            f"ONNX export{' with quantization' if quantize else ''} needs the onnx, onnxscript"
            f"{' and onnxruntime' if quantize else ''} packages ({error.name} is missing): "
            "pip install 'extreme-fine-tuning[onnx]'"
        ) from error
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target} is a folder; give the path of the .onnx file to write.")
    if target.suffix != ".onnx":
        raise InputError(f"Name the ONNX file with the .onnx suffix, not {target.name!r}.")
    wrapper = _ScoresAndProbabilities(model).eval()
    example = {
        k: v.to(model.device_)
        for k, v in pad_batch(_example_ids(model), int(model.tokenizer_.pad_token_id)).items()
    }
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    weight_bytes = sum(p.numel() * 4 for p in wrapper.parameters())
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..."
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's notes on axis names, deprecations
            program = torch.onnx.export(
                wrapper,
                (example["input_ids"], example["attention_mask"]),
                input_names=["input_ids", "attention_mask"],
                output_names=["scores", "probabilities"],
                dynamic_shapes={
                    "input_ids": {0: batch, 1: sequence},
                    "attention_mask": {0: batch, 1: sequence},
                },
                opset_version=opset_version,
                dynamo=True,
                verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - the exporter's limits, named in one line
        kind = getattr(model.model_.encoder.backbone.config, "model_type", "this model")
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        raise InputError(
            f"torch.onnx (dynamo) cannot trace this model ({kind}) to ONNX: "
            f"{type(error).__name__}: {first[:300]} Serve it with eft predict or "
            f"EFTClassifier.from_pretrained instead (sparse or windowed attention, as "
            f"Longformer's and BigBird's, is known not to export)."
        ) from error
    finally:
        registration.setLevel(level)
    program.model.metadata_props.update(
        {
            "eft_labels": json.dumps(model.classes_.tolist()),
            "eft_multi_label": json.dumps(bool(getattr(model, "multi_label_", False))),
            "eft_text_pairs": json.dumps(bool(getattr(model, "text_pairs_", False))),
            "eft_max_length": str(int(model.max_length_)),
            "eft_quantization": quantize or "none",
        }
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as staging:
        staged = Path(staging) / target.name
        if quantize:
            traced = Path(staging) / "float32" / target.name
            traced.parent.mkdir()
            program.save(traced, external_data=weight_bytes > _SINGLE_FILE_BYTES)
            _quantize_int8(traced, staged, external_data=weight_bytes / 4 > _SINGLE_FILE_BYTES)
            shutil.rmtree(traced.parent)
        else:
            program.save(staged, external_data=weight_bytes > _SINGLE_FILE_BYTES)
        old_data = _external_files(target) if target.is_file() else set()
        new_data = _name_external_data(staged)
        for name in new_data:  # the weights first: a graph that exists reads whole weights
            os.replace(Path(staging) / name, target.parent / name)
        os.replace(staged, target)
        for name in old_data - new_data:  # the replaced graph's weights
            (target.parent / name).unlink(missing_ok=True)
    return target


def _locations(proto: Any) -> list[Any]:
    """The ``location`` entries of an ONNX graph's externally stored tensors."""
    from onnx.external_data_helper import _get_all_tensors

    return [
        entry
        for tensor in _get_all_tensors(proto)
        for entry in tensor.external_data
        if entry.key == "location"
    ]


def _external_files(graph: Path) -> set[str]:
    """The files (beside ``graph``) that an ONNX file's weights are stored in."""
    import onnx

    try:
        proto = onnx.load(graph, load_external_data=False)
    except Exception:  # noqa: BLE001 - an unreadable old file: nothing of it to clean up
        return set()
    return {entry.value for entry in _locations(proto)}


def _name_external_data(staged: Path) -> set[str]:
    """Rename the external weights of the ONNX file ``staged`` (if any) to
    ``<name>.<digest>.data`` and point the graph at them; returns the file names."""
    import onnx

    from eft.atomic import sha256_of

    proto = onnx.load(staged, load_external_data=False)
    locations = _locations(proto)
    if not locations:
        return set()
    renamed = {}
    for name in sorted({entry.value for entry in locations}):
        digest = sha256_of(staged.parent / name)
        renamed[name] = f"{staged.name}.{digest[:16]}.data"
        os.replace(staged.parent / name, staged.parent / renamed[name])
    for entry in locations:
        entry.value = renamed[entry.value]
    onnx.save(proto, staged)
    return set(renamed.values())


def _quantize_int8(source: Path, target: Path, external_data: bool) -> None:
    """Dynamic int8 quantization of ``source``'s matrix products into ``target`` (the
    metadata is kept): signed 8-bit weights with a scale per output channel, which changed
    fewer predictions than one scale per tensor in a probe on TREC-6."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It logs "Please consider to run pre-processing ..." through the root logger, which
    # would also give the root logger a stderr handler if it had none.
    root = logging.getLogger()
    level, quiet = root.level, logging.NullHandler()
    root.setLevel(logging.ERROR)
    root.addHandler(quiet)
    try:
        quantize_dynamic(
            source,
            target,
            per_channel=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=external_data,
        )
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)


def example_texts(model: Any) -> list[Any]:
    """A few texts of different lengths (pairs for a pair model), to trace and check with."""
    texts: list[Any] = [
        "an example text to trace the model with",
        "a short one",
        "Who wrote Hamlet?",
        "The film was long, but the acting kept me watching until the very last scene.",
    ]
    if getattr(model, "text_pairs_", False):
        return [(text, "and a second text, its pair") for text in texts]
    return texts


def _example_ids(model: Any) -> list[list[int]]:
    """Two texts of different lengths to trace with (the graph stays dynamic in both axes)."""
    return tokenize(model.tokenizer_, example_texts(model)[:2], model.max_length_)


def onnx_outputs(session: Any, model: Any, texts: Sequence[Any]) -> tuple[np.ndarray, ...]:
    """The ``scores`` and ``probabilities`` of an onnxruntime ``session`` of ``model``'s
    export for ``texts``, in eft's length-sorted batches of ``eval_batch_size`` texts."""
    ids = model._input_ids(list(texts))
    outputs: list[np.ndarray] = []
    pad = int(model.tokenizer_.pad_token_id)
    for rows in sorted_batches([len(i) for i in ids], model.config.eval_batch_size):
        batch = pad_batch([ids[i] for i in rows], pad)
        results = session.run(["scores", "probabilities"], {k: v.numpy() for k, v in batch.items()})
        if not outputs:
            outputs = [np.zeros((len(ids), r.shape[1]), dtype=r.dtype) for r in results]
        for out, result in zip(outputs, results, strict=True):
            out[rows] = result
    return tuple(outputs)


def check_onnx(model: Any, path: str | os.PathLike, texts: Sequence[Any]) -> dict[str, float]:
    """Run the exported file with onnxruntime on ``texts`` and compare with ``model`` in float32
    (the graph's precision, whatever autocast the model predicts with): the largest absolute
    differences of the scores and of the probabilities, and the share of texts whose prediction
    agrees."""
    try:
        import onnxruntime
    except ImportError as error:
        raise InputError(
            "Checking an ONNX file needs onnxruntime: pip install 'extreme-fine-tuning[onnx]'"
        ) from error
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return compare_with_model(model, texts, *onnx_outputs(session, model, texts))


def compare_with_model(
    model: Any, texts: Sequence[Any], scores: np.ndarray, proba: np.ndarray
) -> dict[str, float]:
    """:func:`check_onnx`'s comparison of outputs already computed (``onnx_outputs``)."""
    autocast, model._autocast = model._autocast, None
    try:
        expected_scores = model._class_scores(list(texts))
    finally:
        model._autocast = autocast
    expected_proba = model._probabilities(expected_scores)
    if getattr(model, "multi_label_", False):
        agree = ((proba > 0.5) == (expected_proba > 0.5)).all(1)
    else:
        agree = scores.argmax(1) == expected_scores.argmax(1)
    return {
        "texts": len(texts),
        "max_abs_score_difference": float(np.abs(scores - expected_scores).max()),
        "max_abs_probability_difference": float(np.abs(proba - expected_proba).max()),
        "same_predictions": float(agree.mean()),
    }
