"""LoRA training on yes/no samples with peft and accelerate.

The loss is the language-model loss of the answer's first token at the last
prompt position (over the whole vocabulary, as in TALLRec), computed with
``logits_to_keep`` at that position only, so no [batch, length, vocab] tensor
is built. With ``train_on_inputs`` the loss covers every token of prompt +
answer instead.

Batches are grouped by length, so they pad little. The instruction every
prompt begins with can run once per step instead of once per row (a
shared-prefix KV cache that gradients flow through: the same loss and
gradients for ~40% less work on ML-100K prompts). With LoRA dropout that is
not quite the same training: the prefix of a batch draws one dropout mask,
not one per row. So ``share_prompt_prefix`` is "exact" by default (shared
only when the adapter has no dropout), "always" to share anyway, or "never".
On a GPU, batches are copied without waiting, and the loss is read back only
when it is reported: no host-device sync per step.

On a CPU, training steps run eager attention (``train.attention: auto``) while
scoring keeps SDPA: on SmolLM2 in bf16 the forward + backward of a batch of
16 ML-100K prompts takes 3.2 s with eager attention against 4.0 s with SDPA,
whose CPU backward is slow, while SDPA scores 1.3x faster than eager
(BENCHMARKS.md). The implementation is switched at each phase, never a copy of
the model.

accelerate places the model, runs mixed precision and gradient accumulation,
and splits batches across processes under ``accelerate launch``. The adapter
with the best validation AUC is kept (early stopping with patience); the
validation set is the training periods' own val split, never the test period.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from llm4rec.config import check_seed
from llm4rec.errors import ConfigError
from llm4rec.eval import metrics
from llm4rec.llm.adapters import quiet_peft_warnings
from llm4rec.llm.score import (
    MIN_SHARED_PREFIX,
    final_hidden_states,
    head_is_exact,
    head_logits,
    last_token_logits,
    last_token_logits_after_prefix,
    left_pad,
    output_layer,
    position_ids,
    prefix_cache_applies,
    prefix_states,
    score_sequences,
    shared_prefix_length,
    to_device,
)

log = logging.getLogger(__name__)

PREFIX_SHARING = ("exact", "always", "never")
TRAINING_ATTENTION = ("auto", "model", "eager", "sdpa", "flash_attention_2")
PROGRESS_EVERY = 25  # steps between loss read-backs for the progress bar (each one waits for the device)


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ConfigError(f"lora: r must be >= 1 and alpha > 0, got r={self.r}, alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout: expected a value in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("lora.target_modules: name at least one module, e.g. [q_proj, v_proj]")


@dataclass
class LoraTrainConfig:
    epochs: int = 2
    batch_size: int = 16  # per process
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0
    eval_every: int = 0  # optimizer steps between evaluations; 0 = once per epoch
    eval_at_start: bool = True  # fine-tuning: the starting (trained) adapter is a candidate; a fresh one never is
    patience: int = 2  # evaluations without a better val AUC before stopping
    max_train_samples: int | None = None  # a seeded sample of the training set (None = all)
    max_val_samples: int | None = 1000
    train_on_inputs: bool = False
    group_by_length: bool = True
    eval_batch_size: int = 64
    mixed_precision: Literal["no", "bf16", "fp16"] | None = None  # None: accelerate's configuration
    # Run the prompts' common beginning once per batch: "exact" (when LoRA dropout is 0), "always", "never".
    share_prompt_prefix: Literal["exact", "always", "never"] = "exact"
    # Attention of the training steps: auto (eager on a CPU, where SDPA's backward is slow; the model's own on a
    # GPU), model (the model's own), or an implementation name. Scoring always runs the model's own.
    attention: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate: must be > 0, got {self.learning_rate}")
        if self.patience < 1 or self.eval_every < 0:
            raise ConfigError("train.patience must be >= 1 and train.eval_every >= 0")
        if self.share_prompt_prefix not in PREFIX_SHARING:
            raise ConfigError(
                f"train.share_prompt_prefix: expected one of {', '.join(PREFIX_SHARING)}, "
                f"got {self.share_prompt_prefix!r}"
            )
        if self.attention not in TRAINING_ATTENTION:
            raise ConfigError(
                f"train.attention: expected one of {', '.join(TRAINING_ATTENTION)}, got {self.attention!r}"
            )
        check_seed(self.seed, "train.seed")


@dataclass
class TrainResult:
    best_val_auc: float
    best_step: int
    steps: int  # optimizer steps taken (fewer than planned when early stopping ended the fit)
    planned_steps: int  # the steps the learning-rate schedule was laid out over
    history: list[dict]  # one entry per evaluation: step, epoch, train_loss, val_auc, learning_rate
    seconds: float
    train_samples_per_second: float
    n_train: int  # the training and val samples the fit used (after max_train_samples / max_val_samples)
    n_val: int
    kept_start: bool = False  # best step 0: the starting adapter (fine-tuning) beat every update on val

    def summary(self) -> dict:
        """What a fit's record (``training.json``, an adapter's ``llm4rec.json``) says of it."""
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "best_val_auc": self.best_val_auc,
            "best_step": self.best_step,
            "steps": self.steps,
            "kept_starting_adapter": self.kept_start,
            "train_seconds": round(self.seconds, 1),
            "train_samples_per_second": round(self.train_samples_per_second, 2),
            "history": self.history,
        }


def attach_lora(model, settings: LoraSettings, adapter_name: str = "default"):
    """Wrap ``model`` with a fresh LoRA adapter (a PeftModel gets one more adapter, made active)."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    if isinstance(model, PeftModel):
        if adapter_name in model.peft_config:
            raise ConfigError(f"adapter {adapter_name!r} exists already; pick another name")
        model.add_adapter(adapter_name, config)
        model.set_adapter(adapter_name)
        return model
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model)  # QLoRA: fp32 norms, input grads, checkpointing
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in settings.target_modules if m not in present]
    if missing:
        raise ConfigError(
            f"lora.target_modules: {missing} not found in {type(model).__name__}; "
            f"linear layers there include {sorted(n for n in present if 'proj' in n) or sorted(present)[:12]}"
        )
    with quiet_peft_warnings():
        return get_peft_model(model, config, adapter_name=adapter_name)


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random mega-batches of 50 batches, sorted by length inside: batches pad little yet come in random order."""
    order = rng.permutation(len(lengths))
    mega = batch_size * 50
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def answer_loss(model, input_ids, mask, targets) -> torch.Tensor:
    """Cross-entropy of the answer token at the last prompt position."""
    logits = last_token_logits(model, input_ids, mask)  # fp32, from the final hidden state
    return torch.nn.functional.cross_entropy(logits, targets)


def shared_prefix_answer_loss(model, prefix_ids, input_ids, mask, targets) -> torch.Tensor:
    """``answer_loss`` of prompts = ``prefix_ids`` [1, prefix] + the left-padded tails ``input_ids``: the prefix
    runs once and every row continues from its keys and values (their gradients sum over the rows)."""
    states = prefix_states(model, prefix_ids)
    logits = last_token_logits_after_prefix(model, states, input_ids, mask)
    return torch.nn.functional.cross_entropy(logits, targets)


def shares_prompt_prefix(model, adapter: str, config: LoraTrainConfig) -> bool:
    """Whether training runs the shared prompt prefix once per batch (see ``LoraTrainConfig.share_prompt_prefix``)."""
    if config.share_prompt_prefix == "never" or config.train_on_inputs:
        return False
    if config.share_prompt_prefix == "exact" and getattr(model.peft_config[adapter], "lora_dropout", 0.0) > 0:
        return False  # one dropout mask for the batch's prefix instead of one per row: not the same training
    was_training = model.training
    model.train()  # whether activation checkpointing is on shows in training mode
    applies = prefix_cache_applies(model)
    model.train(was_training)
    return applies


def training_attention(model, config: LoraTrainConfig, device: torch.device) -> str:
    """The attention implementation training steps run (``LoraTrainConfig.attention``) for ``model``."""
    own = model.config._attn_implementation
    if config.attention == "model" or (config.attention == "auto" and device.type != "cpu"):
        return own
    if config.attention == "auto":
        return "eager" if own == "sdpa" else own  # flash attention and the rest: as the model has them
    return config.attention


@contextlib.contextmanager
def attention_implementation(model, name: str):
    """Run ``model`` (a PeftModel or a transformers model) with attention ``name`` inside the block, its own
    after. Switching costs a config update (transformers' ``set_attn_implementation``), no copy of weights."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    own = base.config._attn_implementation
    if name == own:
        yield
        return
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(own)


def full_sequence_loss(model, input_ids, mask) -> torch.Tensor:
    """Causal-LM loss over every real token (``train_on_inputs``): prompt, the whole answer and EOS, as TALLRec
    and the LSAT code train. The logits of every position are taken in fp32 from the final hidden states."""
    # Pads and each row's first token (after a pad under left padding) are no targets.
    labels = input_ids.masked_fill((mask == 0) | (mask.cumsum(-1) == 1), -100)
    if not head_is_exact(model) or output_layer(model).weight.dtype == torch.float32:  # the model's loss is exact
        return model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask), labels=labels).loss
    with final_hidden_states(model) as caught:
        model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=0)
    logits = head_logits(model, caught[-1][:, :-1, :])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def _sample(dataset, limit: int | None, seed: int):
    if limit is None or len(dataset) <= limit:
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def validation_auc(model, val, answer_ids, pad_id, batch_size, device) -> float:
    p = score_sequences(model, val["input_ids"], answer_ids, pad_id, batch_size=batch_size, device=device)
    return metrics.auc(np.asarray(val["label"]), p)


def plan_steps(
    lengths: np.ndarray, config: LoraTrainConfig, world: int, rank: int, rng: np.random.Generator
) -> list[list[list[np.ndarray]]]:
    """This process's training as epochs -> optimizer steps -> micro-batches (row indices).

    Every process gets the same number of micro-batches per epoch (every ``world``-th batch; the last few
    batches of an epoch that do not fill a round across processes are left to the next epoch's shuffle). A step
    accumulates ``gradient_accumulation_steps`` micro-batches; an epoch's last step takes what remains, so no
    micro-batch's gradient is dropped and the step count is known before training starts."""
    plan = []
    for _ in range(config.epochs):
        if config.group_by_length:
            batches = length_grouped_batches(lengths, config.batch_size, rng)
        else:
            order = rng.permutation(len(lengths))
            batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        batches = batches[: len(batches) // world * world] or batches[:world]  # equal count per process
        mine = batches[rank::world]
        k = config.gradient_accumulation_steps
        plan.append([mine[i : i + k] for i in range(0, len(mine), k)])
    return plan


class BestAdapter:
    """The trainable state with the best val AUC so far: a copy of every parameter that trains (the active LoRA,
    plus whatever else the model trains beside it, such as SD-LoRA's magnitudes)."""

    def __init__(self, model, adapter: str) -> None:
        self.model, self.adapter = model, adapter
        self.auc, self.step, self.state = -math.inf, 0, None

    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def offer(self, auc: float, step: int) -> bool:
        """Keep the current weights when ``auc`` beats the best so far; True when it did."""
        if self.state is not None and not auc > self.auc:
            return False
        state = {name: p.detach().clone() for name, p in self._trainable().items()}
        self.auc, self.step, self.state = auc, step, state
        return True

    @torch.no_grad()
    def restore(self) -> None:
        trainable = self._trainable()
        if trainable.keys() != self.state.keys():
            raise RuntimeError(f"internal: the trainable parameters changed during the fit of {self.adapter!r}")
        for name, p in trainable.items():
            p.copy_(self.state[name])


class RecentLoss:
    """The mean training loss of the last 50 micro-batches, kept on the device until it is read (one sync)."""

    def __init__(self) -> None:
        self.values: collections.deque[torch.Tensor] = collections.deque(maxlen=50)

    def add(self, loss: torch.Tensor) -> None:
        self.values.append(loss.detach())

    def mean(self) -> float:
        return float(torch.stack(list(self.values)).float().mean()) if self.values else float("nan")


class MicroBatchLoss:
    """The loss of one micro-batch (row indices into the training set): the answer loss, over the prompts' shared
    prefix run once when that is exact (:func:`shares_prompt_prefix`), or the whole-sequence loss with
    ``train_on_inputs``."""

    def __init__(self, model, plain, sequences: list[list[int]], targets: torch.Tensor, pad_id: int, device,
                 config: LoraTrainConfig) -> None:  # fmt: skip
        """``model``: as accelerate prepared it (it runs the forward); ``plain``: the PeftModel it wraps."""
        self.model, self.targets, self.pad_id, self.device, self.config = model, targets, pad_id, device, config
        self.prefix_ids, self.tails = None, sequences
        if shares_prompt_prefix(plain, plain.active_adapter, config):
            prefix_length = shared_prefix_length(sequences)
            if prefix_length >= MIN_SHARED_PREFIX:
                self.prefix_ids = torch.tensor([sequences[0][:prefix_length]], device=device)
                self.tails = [seq[prefix_length:] for seq in sequences]

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        input_ids, mask = left_pad([self.tails[i] for i in batch], self.pad_id)
        input_ids, mask = to_device(input_ids, self.device), to_device(mask, self.device)
        if self.config.train_on_inputs:
            return full_sequence_loss(self.model, input_ids, mask)
        batch_targets = to_device(self.targets[batch], self.device)
        if self.prefix_ids is not None:
            return shared_prefix_answer_loss(self.model, self.prefix_ids, input_ids, mask, batch_targets)
        return answer_loss(self.model, input_ids, mask, batch_targets)


class Validation:
    """Scores the val set at each evaluation, keeps the best adapter (:class:`BestAdapter`), records the history
    and counts the evaluations without improvement; calling it returns True when patience has run out."""

    def __init__(self, model, plain, val, answer_ids, pad_id, config: LoraTrainConfig, device, optimizer,
                 fit_name: str, log_line) -> None:  # fmt: skip
        self.model, self.plain, self.val, self.answer_ids, self.pad_id = model, plain, val, answer_ids, pad_id
        self.config, self.device, self.optimizer, self.fit_name, self.log_line = (
            config,
            device,
            optimizer,
            fit_name,
            log_line,
        )
        self.best = BestAdapter(plain, plain.active_adapter)
        self.scoring_attention = plain.get_base_model().config._attn_implementation  # the model's own
        self.history: list[dict] = []
        self.waited, self.seconds = 0, 0.0

    def __call__(self, step: int, epoch: float, loss: float) -> bool:
        if self.device.type == "cuda":  # queued training work belongs to training time, not to evaluation time
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        with attention_implementation(self.plain, self.scoring_attention):
            auc = validation_auc(self.plain, self.val, self.answer_ids, self.pad_id, self.config.eval_batch_size,
                                 self.device)  # fmt: skip
        if math.isnan(auc):
            y = np.asarray(self.val["label"])
            raise ConfigError(
                f"{self.fit_name}: the val AUC at step {step} is NaN ({len(y)} val samples, {int(y.sum())} positive): "
                "AUC needs both classes in the val split, or the scores are NaN (a diverged fit: lower the "
                "learning rate); raise samples.val / train.max_val_samples or pick other periods"
            )
        train_loss = None if math.isnan(loss) else loss  # None before any step: results stay strict JSON
        self.history.append({"step": step, "epoch": round(epoch, 3), "train_loss": train_loss, "val_auc": auc,
                             "learning_rate": self.optimizer.param_groups[0]["lr"]})  # fmt: skip
        self.log_line(f"step {step} epoch {epoch:.2f}: train loss {loss:.4f}, val AUC {auc:.4f}")
        self.waited = 0 if self.best.offer(auc, step) else self.waited + 1
        self.model.train()
        self.seconds += time.perf_counter() - started
        return self.waited >= self.config.patience

    @property
    def last_step(self) -> int | None:
        return self.history[-1]["step"] if self.history else None


def run_steps(plan, model, loss_of, validation: Validation, optimizer, scheduler, accelerator, trainable,
              config: LoraTrainConfig, bar) -> tuple[int, int, RecentLoss]:  # fmt: skip
    """The step loop over ``plan`` (:func:`plan_steps`): micro-batches accumulated into optimizer steps, evaluated
    every ``eval_every`` steps or once per epoch, until the plan ends or patience runs out. Returns (steps taken,
    training rows seen over all processes, the recent losses)."""
    recent = RecentLoss()
    world = accelerator.num_processes
    step, seen = 0, 0
    for epoch, epoch_steps in enumerate(plan):
        for index, micro_batches in enumerate(epoch_steps):
            rows = sum(len(b) for b in micro_batches)
            for k, batch in enumerate(micro_batches):
                # The gradients of a step's micro-batches add up locally; processes sync on the last one.
                syncing = contextlib.nullcontext() if k == len(micro_batches) - 1 else accelerator.no_sync(model)
                with syncing:
                    loss = loss_of(batch)
                    accelerator.backward(loss * (len(batch) / rows))  # the step's mean over its rows
                recent.add(loss)
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seen += rows * world
            step += 1
            bar.update()
            if bar.disable is False and step % PROGRESS_EVERY == 0:
                bar.set_postfix(loss=f"{recent.mean():.4f}")
            evaluating = config.eval_every and step % config.eval_every == 0
            if evaluating and validation(step, epoch + (index + 1) / len(epoch_steps), recent.mean()):
                return step, seen, recent
        if not config.eval_every and validation(step, epoch + 1.0, recent.mean()):
            return step, seen, recent
    return step, seen, recent


def train_lora(
    model,
    tokenizer,
    answer_ids: tuple[int, int],
    train,
    val,
    config: LoraTrainConfig,
    accelerator=None,
    progress: bool = True,
    keep_start: bool = False,
    fit_name: str = "LoRA fit",
    answer_tokens: dict[int, list[int]] | None = None,
) -> TrainResult:
    """Train the active adapter of PeftModel ``model`` on ``train`` (a samples Dataset); keep the best on ``val``.

    ``keep_start``: the starting adapter is a candidate too (fine-tuning an adapter that was trained before, with
    ``config.eval_at_start``); a fresh LoRA is the identity, so for it the candidates are the trained states only,
    never the bare backbone in disguise. A best step of 0 (the starting adapter kept) is logged as a warning and
    reported in ``TrainResult.kept_start``. ``answer_tokens`` (label -> the whole answer and EOS, as
    :func:`~llm4rec.llm.backbone.answer_continuations` gives) is needed with ``train_on_inputs``. Gradient
    accumulation is done here, so ``accelerator`` must not accumulate itself: see :func:`plan_steps`."""
    from accelerate import Accelerator
    from transformers import get_linear_schedule_with_warmup

    if accelerator is None:
        accelerator = Accelerator(mixed_precision=config.mixed_precision)
    if accelerator.gradient_accumulation_steps != 1:
        raise ConfigError(
            "train_lora accumulates gradients itself (train.gradient_accumulation_steps); create the Accelerator "
            "without gradient_accumulation_steps"
        )
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"{fit_name}: training needs samples, got {len(train)} train and {len(val)} val samples")
    train, val = (
        _sample(train, config.max_train_samples, config.seed),
        _sample(val, config.max_val_samples, config.seed),
    )
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    sequences, labels = train["input_ids"], np.asarray(train["label"])
    lengths = np.asarray([len(s) for s in sequences])
    if config.train_on_inputs:
        if answer_tokens is None:
            raise ConfigError(f"{fit_name}: train_on_inputs needs the answers' tokens (Backbone.answer_tokens)")
        sequences = [s + answer_tokens[int(y)] for s, y in zip(sequences, labels, strict=True)]
    targets = torch.as_tensor(np.where(labels == 1, answer_ids[0], answer_ids[1]))
    world, rank = accelerator.num_processes, accelerator.process_index
    plan = plan_steps(lengths, config, world, rank, rng)
    steps = sum(len(epoch) for epoch in plan)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    # accelerate's prepared scheduler advances once per process at each optimizer step (its convention for
    # sharded data), so the schedule is laid out over the steps of all processes together.
    total = steps * world
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(total * config.warmup_fraction), total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    pad_id, device = tokenizer.pad_token_id, accelerator.device
    plain = accelerator.unwrap_model(model)
    loss_of = MicroBatchLoss(model, plain, sequences, targets, pad_id, device, config)

    def log_line(line: str) -> None:
        if accelerator.is_main_process:
            tqdm.write(line) if progress else log.info(line)

    validation = Validation(model, plain, val, answer_ids, pad_id, config, device, optimizer, fit_name, log_line)
    started = time.perf_counter()
    model.train()
    if keep_start and config.eval_at_start:
        validation(0, 0.0, float("nan"))
    bar = tqdm(total=steps, desc="LoRA training", unit="step", disable=not (progress and accelerator.is_main_process))
    with attention_implementation(plain, training_attention(plain.get_base_model(), config, device)):
        step, seen, recent = run_steps(plan, model, loss_of, validation, optimizer, scheduler, accelerator,
                                       trainable, config, bar)  # fmt: skip
    if validation.last_step != step:  # the final state is always a candidate
        validation(step, float(len(plan)), recent.mean())
    bar.close()
    seconds = time.perf_counter() - started
    best = validation.best
    best.restore()
    model.eval()
    kept_start = keep_start and best.step == 0
    if kept_start and accelerator.is_main_process:
        log.warning("%s: no update beat the starting adapter on val (AUC %.4f); it is kept", fit_name, best.auc)
    log.info("%s: best val AUC %.4f at step %d of %d", fit_name, best.auc, best.step, step)
    return TrainResult(
        best_val_auc=float(best.auc),
        best_step=int(best.step),
        steps=step,
        planned_steps=steps,
        history=validation.history,
        seconds=seconds,
        train_samples_per_second=seen / max(seconds - validation.seconds, 1e-9),
        n_train=len(train),
        n_val=len(val),
        kept_start=kept_start,
    )
