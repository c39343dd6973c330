"""The BP stage (Algorithm 1, steps 1-5): fine-tune every parameter with a linear head.

One loop serves EFT's brief k epochs and the standard fine-tuning baseline (``method="bp"``,
with early stopping). It runs through Hugging Face Accelerate, so the same code trains on a
CPU, one GPU, or data-parallel over many (``torchrun`` / ``accelerate launch``), with mixed
precision where the device supports it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from eft.callbacks import EpochLog
from eft.checkpoint import restore_checkpoint, save_checkpoint
from eft.config import EFTConfig
from eft.encoder import Collator, EncodedTexts, LengthGroupedBatchSampler, TextEncoder
from eft.errors import InputError

if torch.distributed.is_available():
    # Imported here, before accelerate opens a process group: torch.distributed.nn binds
    # `group.WORLD` into its functions' default arguments when it is first imported, and DDP
    # imports it. Imported with a group open, it keeps that group alive after
    # destroy_process_group; gloo's threads then run on into interpreter shutdown, and one that
    # frees a finished all-reduce's tensors there needs the GIL, exits the thread and aborts
    # the rank (SIGABRT, "terminate called without an active exception"; 3 of about 150 runs
    # of the 2-rank streaming test, none of 100 with this import).
    import torch.distributed.nn  # noqa: F401


class EncoderWithLinearHead(nn.Module):
    """``P_f`` plus the linear classifier ``FC_alpha``; returns logits and pooled features."""

    def __init__(self, encoder: TextEncoder, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(encoder.feature_dim, n_classes)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(input_ids, attention_mask)
        return self.classifier(features), features


@dataclass
class BPResult:
    """What the BP stage did: per-epoch loss, validation score and seconds."""

    epochs_run: int = 0
    train_loss: list[float] = field(default_factory=list)
    validation_score: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    evaluation_seconds: float = 0.0
    best_epoch: int | None = None
    stopped_by_callback: bool = False
    """A callback's ``on_epoch_end`` ended the stage before its last epoch."""
    unfed_indices: list[int] = field(default_factory=list)
    """Samples of the last epoch's batches before ``feature_sink_fraction`` (in-memory data)."""
    resumed_seconds: float = 0.0
    """Seconds of the epochs and validation passes restored from a checkpoint: the earlier
    processes' share of ``seconds`` and ``evaluation_seconds`` (0 for a fit not resumed)."""

    @property
    def seconds(self) -> float:
        return float(sum(self.epoch_seconds))

    @property
    def seconds_to_best(self) -> float:
        if self.best_epoch is None:
            return self.seconds
        return float(sum(self.epoch_seconds[: self.best_epoch]))


_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDING_NAMES = ("embed", ".wte.", ".wpe.")


def layer_depths(names: list[str]) -> dict[str, int]:
    """Depth of each parameter for layer-wise rate decay: 0 for the embeddings, i + 1 for
    transformer block i (``encoder.layer.i`` in BERT/RoBERTa, ``layers.i``, ``h.i``, ...),
    and one above the last block for everything else (pooler, final norm, the linear head).

    Raises ValueError when no name carries a block index (an architecture we cannot split).
    """
    blocks = {name: int(match.group(1)) for name in names if (match := _LAYER_INDEX.search(name))}
    if not blocks:
        raise ValueError("no parameter name carries a transformer block index")
    top = max(blocks.values()) + 2

    def depth(name: str) -> int:
        if name in blocks:
            return blocks[name] + 1
        return 0 if any(part in name for part in _EMBEDDING_NAMES) else top

    return {name: depth(name) for name in names}


def supervised_contrastive_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.3
) -> torch.Tensor:
    """Supervised contrastive loss of a batch (Khosla et al. 2020, Eq. 2, "L_out"):

        L = mean over anchors i with a positive of
            -1/|P(i)| sum_{p in P(i)} log( exp(z_i . z_p / t) / sum_{a != i} exp(z_i . z_a / t) )

    with z the L2-normalised features and P(i) the other samples of i's label. Anchors
    without a positive in the batch add nothing; a batch without any gives 0."""
    z = nn.functional.normalize(features, dim=1)
    logits = z @ z.T / temperature
    n = len(labels)
    self_mask = torch.eye(n, dtype=torch.bool, device=features.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(1)
    anchors = counts > 0
    if not anchors.any():
        return features.sum() * 0.0  # keeps the graph
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)[anchors] / counts[anchors]
    return -mean_log_prob.mean()


def _optimizer(model: nn.Module, config: EFTConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases and LayerNorm weights (the usual practice).

    With ``config.layer_lr_decay`` = d < 1 the rate also falls by d per layer below the top
    (layer-wise learning-rate decay, as in ELECTRA and DeBERTa fine-tuning): the head, pooler
    and final norm train at ``learning_rate``, the last block at d times it, the embeddings of
    an L-block encoder at d^(L+1) times it.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    depths: dict[str, int] = {}
    top = 0
    if config.layer_lr_decay != 1:
        try:
            depths = layer_depths([n for n, _ in named])
        except ValueError as error:
            raise InputError(
                f"layer_lr_decay={config.layer_lr_decay:g} needs transformer blocks named "
                "like encoder.layer.N or layers.N, and this model has none "
                f"({type(model).__name__}); leave layer_lr_decay at 1."
            ) from error
        top = max(depths.values())
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, parameter in named:
        no_decay = parameter.ndim < 2 or "LayerNorm" in name
        groups.setdefault((depths.get(name, top), no_decay), []).append(parameter)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "weight_decay": 0.0 if no_decay else config.weight_decay,
                "lr": config.learning_rate * config.layer_lr_decay ** (top - depth),
            }
            for (depth, no_decay), params in sorted(groups.items())
        ],
        lr=config.learning_rate,
    )


def _schedule(
    optimizer: torch.optim.Optimizer, config: EFTConfig, total_steps: int, steps_per_epoch: int
):
    """Learning-rate factor per step: warm-up, then constant, linear decay to 0 over the run,
    or ("linear_per_epoch") warm-up and linear decay to 0 within every epoch, restarting at
    the peak, so that the first k epochs of a longer run equal a k-epoch run (``eft tune``).
    With one epoch, "linear" and "linear_per_epoch" are the same schedule."""
    per_epoch = config.lr_schedule == "linear_per_epoch"
    period = steps_per_epoch if per_epoch else total_steps  # the span of one warm-up + decay
    warmup = int(config.warmup_ratio * period)

    def factor(step: int) -> float:
        position = step % period if per_epoch else step
        if position < warmup:
            return (position + 1) / max(1, warmup)
        if config.lr_schedule == "constant":
            return 1.0
        return max(0.0, (period - position) / max(1, period - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class BatchSource(Protocol):
    """Training batches read afresh each epoch (a stream): ``len()`` steps per epoch, and
    ``epoch(e)`` yields padded batches with ``labels``, the same count on every rank."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]: ...


def train_backprop(
    model: EncoderWithLinearHead,
    input_ids: list[list[int]] | BatchSource,
    label_index: np.ndarray | None,
    pad_id: int,
    config: EFTConfig,
    accelerator,
    epochs: int,
    class_weights: torch.Tensor | None = None,
    feature_sink: Callable[..., None] | None = None,
    feature_sink_fraction: float = 1.0,
    evaluate: Callable[[nn.Module], float] | None = None,
    patience: int | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_last: bool = True,
    checkpoint_metadata: dict[str, Any] | None = None,
    resume_from: Path | None = None,
    on_epoch_end: Callable[[EpochLog, nn.Module], bool] | None = None,
    sample_weight: torch.Tensor | None = None,
) -> tuple[nn.Module, BPResult]:
    """Fine-tune ``model`` for ``epochs`` epochs; returns the (unwrapped) model and a record.

    ``feature_sink(features, label_index)`` receives the detached pooled features of the
    batches of the LAST epoch (fused mode): of its last ``feature_sink_fraction`` of the steps;
    the sample indices of the earlier steps end in ``result.unfed_indices`` (in-memory data
    only, for a feature pass after training). ``evaluate(model) -> score`` runs after each epoch
    when given; with ``patience``, training stops after that many epochs without a better
    score and the best epoch's weights are restored (the baseline's early stopping).

    With ``checkpoint_dir``, the state after every epoch (but the last unless
    ``checkpoint_last``) is saved there; ``resume_from`` continues from such a checkpoint and
    ends with the same model as an uninterrupted run with the same seed.

    ``on_epoch_end(log, model)`` runs after each epoch (and its evaluation) on every rank;
    True on any rank stops the stage there (:mod:`eft.callbacks`).

    ``sample_weight`` (in-memory data: one weight per text) multiplies each text's loss:
    with the weights scaled to mean 1 (so that the step size stays), ``sum_i w_i c_i l_i /
    sum_i c_i`` over a batch with class weights ``c`` (1 without), the unweighted loss when
    every ``w_i`` is 1; ``feature_sink`` then receives the batch's weights (as given) as a
    third argument.
    """
    from tqdm.auto import tqdm

    optimizer = _optimizer(model, config)
    if isinstance(input_ids, list):
        source = None
        sampler = LengthGroupedBatchSampler(
            [len(s) for s in input_ids], config.batch_size, config.seed
        )
        loader = torch.utils.data.DataLoader(
            EncodedTexts(input_ids, label_index),
            batch_sampler=sampler,
            collate_fn=Collator(pad_id),
        )
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        # the prepared scheduler steps once per rank at every optimizer step, and each rank
        # takes len(loader) steps: the batches divided among the ranks, the last rounded up
        # (accelerate evens them out), so not len(sampler) where they do not divide evenly
        steps = len(loader) * accelerator.num_processes
        scheduler = accelerator.prepare(_schedule(optimizer, config, steps * epochs, steps))
    else:  # a stream: every rank reads its own share already, so the batches stay unprepared
        source = input_ids
        if sample_weight is not None:
            raise ValueError("sample_weight needs in-memory data (token id lists), not a stream.")
        # len(source) counts this rank's steps, while the prepared scheduler steps once per
        # rank at every optimizer step (as for a prepared loader's unsharded length)
        steps = len(source) * accelerator.num_processes
        scheduler = _schedule(optimizer, config, steps * epochs, steps)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    class_weights = None if class_weights is None else class_weights.to(accelerator.device)
    reduction = "mean" if sample_weight is None else "none"
    cross_entropy = nn.CrossEntropyLoss(
        weight=class_weights, label_smoothing=config.label_smoothing, reduction=reduction
    )
    binary_cross_entropy = nn.BCEWithLogitsLoss(reduction=reduction)  # a sigmoid per label
    loss_weight = None
    if sample_weight is not None:
        sample_weight = torch.as_tensor(sample_weight).to(accelerator.device, torch.float64)
        loss_weight = (sample_weight / sample_weight.mean()).float()
    weight = config.contrastive_weight

    def loss_fn(
        logits: torch.Tensor,
        features: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor | None = None,
    ):
        if labels.ndim == 2:  # 0/1 indicator rows (class weights, smoothing, contrast refused)
            loss = binary_cross_entropy(logits.float(), labels.float())
            return loss if weights is None else (weights * loss.mean(1)).mean()
        loss = cross_entropy(logits.float(), labels)
        if weights is not None:  # each text's loss is c_y l already (torch's weight)
            total = len(labels) if class_weights is None else class_weights[labels].sum()
            loss = (weights * loss).sum() / total
        if not weight:
            return loss
        contrastive = supervised_contrastive_loss(
            features.float(), labels, config.contrastive_temperature
        )
        return (1 - weight) * loss + weight * contrastive

    result = BPResult()
    best_score, best_state, since_best = -np.inf, None, 0
    start_epoch = 0
    if resume_from is not None:
        state = restore_checkpoint(
            resume_from, accelerator.unwrap_model(model), optimizer, scheduler, accelerator.scaler
        )
        start_epoch = int(state["epoch"])
        if source is None:
            sampler.epoch = start_epoch
        result = BPResult(**state["result"])
        result.resumed_seconds = result.seconds + result.evaluation_seconds
        if state["best_score"] is not None:
            best_score = state["best_score"]
        since_best, best_state = int(state["since_best"]), state["best_state"]
    show = config.progress and accelerator.is_main_process
    stopped = (patience is not None and since_best >= patience) or result.stopped_by_callback
    for epoch in range(start_epoch, 0 if stopped else epochs):
        model.train()
        last = epoch == epochs - 1
        _synchronize(accelerator.device)
        start = time.perf_counter()
        total_loss, batches = torch.zeros((), device=accelerator.device), 0
        if source is None:
            batches_of_epoch = loader
        else:  # through a DataLoader too, which draws its seed from the RNG as above
            loader_of_epoch = torch.utils.data.DataLoader(_EpochOf(source, epoch), batch_size=None)
            batches_of_epoch = (
                {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
                for batch in loader_of_epoch
            )
        steps = len(loader) if source is None else len(source)
        first_sink_step = steps - math.ceil(feature_sink_fraction * steps)
        unfed: list[torch.Tensor] = []
        bar = tqdm(
            batches_of_epoch,
            total=steps,
            desc=f"BP epoch {epoch + 1}/{epochs}",
            disable=not show,
            leave=False,
        )
        for step, batch in enumerate(bar):
            labels = batch.pop("labels")
            index = batch.pop("index", None)
            weights = None if loss_weight is None else loss_weight[index]
            with accelerator.autocast():
                logits, features = model(batch["input_ids"], batch["attention_mask"])
                loss = loss_fn(logits, features, labels, weights)
            accelerator.backward(loss)
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if last and feature_sink is not None:
                if step >= first_sink_step:
                    fed = [features.detach().float(), labels]
                    feature_sink(*fed, *([] if weights is None else [sample_weight[index]]))
                elif index is None:
                    raise ValueError("feature_sink_fraction < 1 needs batches with an 'index'.")
                else:
                    unfed.append(index)
            total_loss += loss.detach().float()  # no host sync per step
            batches += 1
            if show and batches % 20 == 0:
                bar.set_postfix(loss=f"{float(total_loss) / batches:.4f}", refresh=False)
        _synchronize(accelerator.device)
        result.epoch_seconds.append(time.perf_counter() - start)
        if unfed:
            result.unfed_indices = torch.cat(unfed).cpu().tolist()
        result.train_loss.append(float(total_loss) / max(1, batches))
        result.epochs_run = epoch + 1
        if evaluate is not None:
            clock = time.perf_counter()
            score = float(evaluate(accelerator.unwrap_model(model)))
            result.evaluation_seconds += time.perf_counter() - clock
            result.validation_score.append(score)
            if score > best_score:
                best_score, result.best_epoch, since_best = score, epoch + 1, 0
                if patience is not None:
                    best_state = {  # on the CPU: no second copy of the model on the GPU
                        k: v.detach().cpu().clone()
                        for k, v in accelerator.unwrap_model(model).state_dict().items()
                    }
            else:
                since_best += 1
        stop = patience is not None and since_best >= patience
        if on_epoch_end is not None:
            log = EpochLog(
                epoch=epoch + 1,
                epochs=epochs,
                train_loss=result.train_loss[-1],
                validation_accuracy=result.validation_score[-1] if evaluate else None,
                seconds=result.epoch_seconds[-1],
                is_main_process=accelerator.is_main_process,
            )
            asked = bool(on_epoch_end(log, accelerator.unwrap_model(model)))
            if accelerator.num_processes > 1:  # every rank stops if any asks
                flag = torch.tensor([float(asked)], device=accelerator.device)
                asked = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
            if asked and not stop and epoch + 1 < epochs:
                result.stopped_by_callback = stop = True
        if (
            checkpoint_dir is not None
            and accelerator.is_main_process
            and (checkpoint_last or (epoch + 1 < epochs and not stop))
        ):
            save_checkpoint(
                checkpoint_dir,
                epoch + 1,
                accelerator.unwrap_model(model),
                optimizer,
                scheduler,
                result,
                {"state": best_state, "score": best_score, "since_best": since_best},
                checkpoint_metadata or {},
                scaler=accelerator.scaler,  # fp16: the loss scale reached, as the optimizer's
            )
        wait_for_everyone(accelerator)
        if stop:
            break
    model = accelerator.unwrap_model(model)
    if best_state is not None and result.best_epoch != result.epochs_run:
        model.load_state_dict(best_state)
    accelerator.free_memory()
    return model, result


class _EpochOf(torch.utils.data.IterableDataset):
    """One epoch of a :class:`BatchSource`, as an iterable dataset of ready batches."""

    def __init__(self, source: BatchSource, epoch: int) -> None:
        self.source, self.epoch = source, epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.source.epoch(self.epoch))


def wait_for_everyone(accelerator) -> None:
    """A barrier across ranks that also works for CPU ranks on a GPU machine.

    accelerate's ``wait_for_everyone`` passes ``device_ids=[local rank]`` for every backend,
    and torch then runs the gloo barrier of a CPU run on ``cuda:<local rank>``: on an H200
    machine two CPU ranks failed there (rank 1 has no GPU of its own). CPU ranks get a plain
    ``barrier()``, which torch runs on the CPU for a gloo group.
    """
    if accelerator.num_processes > 1 and accelerator.device.type == "cpu":
        torch.distributed.barrier()
    else:
        accelerator.wait_for_everyone()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
