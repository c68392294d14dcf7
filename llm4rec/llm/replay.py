"""Replay in LoRA updates: a one-period fit learns period t plus samples replayed from earlier periods.

``<method>+Reservoir`` and ``<method>+MEGG`` (fine-tuning, and LSAT's short-term adapter in every LSAT row that
serves it) are the CTR side's replay (:mod:`llm4rec.incremental.replay`) applied to the LLM's samples, with its
reservoir and selection rules (:mod:`llm4rec.incremental.reservoir`):

- the reservoir at period t is a uniform sample (reservoir sampling, ``replay.reservoir_capacity``) of what the
  fits before t learnt, offered period by period in time order (training_rows(p, p) for p < t, the one row
  rule: train_p and val_{p-1}). It is rebuilt from its seed for each t, so a resumed run, which fits only what is
  missing, replays what a straight run would;
- **Reservoir** replays ``replay.ratio`` x |new| of them, drawn uniformly;
- **MEGG** (arXiv 2509.07319) scores a seeded draw of ``replay.megg_pool`` of them by GGscore(z) = <g(z), g_ref>:
  the gradient of z's answer loss dotted with the gradient of the pool's mean loss, both over the LoRA
  parameters of the model the fit continues from (the LLM analogue of MEGG's parameter-localised gradients:
  the parameters an update can change), and keeps both ends, ``replay.megg_ratio`` x |new| of them. The
  model is the adapter FT starts from (trained through t - 1) or, for the short-term adapter, which starts
  fresh, the long-term adapter serving period t. The paper's penultimate-epoch snapshot is not kept: an LLM fit
  here runs one epoch, so the adapter it starts from is the one there is.

|new| is the fit's own sample of period t (``samples.recent_fit``, the same rows the method without replay
learns), so replay adds samples and never displaces new ones. The fit's record says how many of each it saw.

One backward pass per sample is slow, and autograd gives only a batch's summed gradient. But a LoRA layer's
weight gradient is a sum over tokens of outer products, grad(W) = sum_t delta_t x_t^T (x_t the layer's input at
token t, delta_t the loss's gradient at its output), both of which hooks catch in one batched backward pass
(padding rows contribute nothing: no loss reads them). :func:`lora_ggscores` contracts them into each sample's
LoRA gradient and keeps those side by side (a LoRA of SmolLM2 holds 0.46M parameters: 0.3 GB for a pool of 168),
so one pass gives every score; a pool whose gradients would not fit ``one_pass_bytes`` takes two passes that
keep nothing per sample: the reference R first, then <grad_z(W), R> = sum_t delta_t^T R x_t. Written here:
Opacus's GradSampleModule does the same contraction for linear layers but wraps the whole model for training
with differential privacy, and has no two-pass form; the few lines here tap only the LoRA layers, for one call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llm4rec.data.periods import Timeline
from llm4rec.errors import ConfigError
from llm4rec.incremental.reservoir import Reservoir, keep_both_ends
from llm4rec.io import write_json
from llm4rec.llm.train import attention_implementation, training_attention

log = logging.getLogger(__name__)

SELECTIONS = ("Reservoir", "MEGG")


def sample_positions(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The positions ``limit`` seeded draws of n rows keep, in draw order (all of them, in order, when n <= limit):
    what :func:`llm4rec.llm.train.train_lora` draws from a training set of n samples (datasets' ``shuffle(seed)``
    then the first ``limit``)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.random.default_rng(seed).permutation(n)[:limit]


def reservoir_before(timeline: Timeline, period: int, capacity: int, seed: int) -> np.ndarray:
    """Positions in ``timeline.table`` of the reservoir a fit at ``period`` replays from: every row the fits of
    periods 0..period-1 learnt, offered in time order to a reservoir of ``capacity`` (seeded by ``seed``)."""
    reservoir = Reservoir(capacity, np.random.default_rng([seed, 2018]))
    for earlier in range(period):
        reservoir.add(timeline.training_positions(earlier, earlier))
    return np.sort(reservoir.rows)


@dataclass
class ReplayPlan:
    """What a one-period fit learns: its new rows and the replayed ones, and how the replayed ones were chosen."""

    new: pd.DataFrame
    replayed: pd.DataFrame
    reservoir: int  # rows in the reservoir the replayed ones came from
    pool: int  # rows the selection looked at (MEGG: the GGscored draw; Reservoir: the whole reservoir)

    @property
    def rows(self) -> pd.DataFrame:
        return pd.concat([self.new, self.replayed])

    def record(self, selection: str) -> dict:
        """The fit's record of its samples: how many new ones, how many replayed (and from which periods)."""
        return {
            "selection": selection,
            "new": len(self.new),
            "replayed": len(self.replayed),
            "reservoir": self.reservoir,
            "pool": self.pool,
            "replayed_periods": sorted(int(p) for p in self.replayed["period"].unique()),
        }


class LoraReplay:
    """The replay of one ``<method>+<selection>``: which earlier rows each of its one-period fits adds.

    ``config``: the run's ``replay`` section (:class:`~llm4rec.llm.lsat_config.LoraReplayConfig`); ``seed``: the
    run's seed. MEGG's selections are kept in ``cache_dir`` (keyed by the scoring adapter's recipe and the rows),
    so a rerun that reuses the fit does not recompute its GGscores.
    """

    def __init__(self, selection: str, config, seed: int, cache_dir=None) -> None:
        if selection not in SELECTIONS:
            raise ConfigError(f"replay selection {selection!r} is unknown; available: {list(SELECTIONS)}")
        self.selection, self.config, self.seed, self.cache_dir = selection, config, seed, cache_dir

    def plan(self, session, period: int, new: pd.DataFrame, scorer=None) -> ReplayPlan:
        """The rows a fit at ``period`` learns beside ``new`` (its own sample of period t). ``scorer``: the adapter
        directory MEGG's gradients come from (None for Reservoir)."""
        table = session.timeline.table
        positions = reservoir_before(session.timeline, period, self.config.reservoir_capacity, self.seed)
        rng = np.random.default_rng([self.seed, 2018, period])
        if self.selection == "Reservoir":
            n = min(round(self.config.ratio * len(new)), len(positions))
            chosen, pool = np.sort(rng.choice(positions, size=n, replace=False)), len(positions)
        else:
            candidates = np.sort(rng.choice(positions, size=min(self.config.megg_pool, len(positions)), replace=False))
            n = round(self.config.megg_ratio * len(new))
            chosen, pool = self._megg(session, table.iloc[candidates], candidates, n, scorer), len(candidates)
        return ReplayPlan(new, table.iloc[chosen], len(positions), pool)

    def _megg(self, session, candidates: pd.DataFrame, positions: np.ndarray, n: int, scorer) -> np.ndarray:
        if scorer is None:
            raise ConfigError("internal: MEGG replay needs the adapter its gradients come from")
        key = session.recipe(megg={"scorer": session.stored_recipe(scorer), "rows": positions.tolist(), "n": n})
        cached = self._cached(key)
        if cached is not None:
            return cached
        started = time.perf_counter()
        samples = session.samples(candidates)
        name = session.load(scorer)
        targets = np.where(np.asarray(samples["label"]) == 1, *session.backbone.answer_ids)
        model = session.model
        # The training steps' attention: SDPA's backward is slow on a CPU.
        attention = training_attention(model.get_base_model(), session.train_config, next(model.parameters()).device)
        with attention_implementation(model, attention):
            scores = lora_ggscores(
                model, name, samples["input_ids"], targets, session.backbone.tokenizer.pad_token_id,
                self.config.megg_chunk_size, progress=session.progress,
            )  # fmt: skip
        chosen = np.sort(positions[keep_both_ends(scores, n)])
        seconds = time.perf_counter() - started
        log.info(
            "MEGG: GGscores of %d reservoir rows under %s in %.1f s (%.0f%% positive); kept both ends, %d rows",
            len(positions), scorer, seconds, 100 * float(np.mean(scores > 0)), len(chosen),
        )  # fmt: skip
        self._store(key, chosen, scores, seconds)
        return chosen

    def _cache_file(self, key: str):
        return None if self.cache_dir is None else self.cache_dir / f"megg-{key}.json"

    def _cached(self, key: str) -> np.ndarray | None:
        path = self._cache_file(key)
        if path is None or not path.exists():
            return None
        return np.asarray(json.loads(path.read_text())["chosen"], dtype=np.int64)

    def _store(self, key: str, chosen: np.ndarray, scores: np.ndarray, seconds: float) -> None:
        path = self._cache_file(key)
        if path is not None:
            write_json(path, {"chosen": chosen.tolist(), "ggscores": scores.tolist(), "seconds": round(seconds, 1)})


# --- GGscores over LoRA parameters ------------------------------------------------------------------------------
def lora_layers(model, adapter: str) -> list[tuple[str, torch.nn.Linear]]:
    """(name, module) of every ``lora_A`` / ``lora_B`` linear layer of ``adapter`` in a peft LoRA model."""
    layers = []
    for name, module in model.named_modules():
        for part in ("lora_A", "lora_B"):
            owner = getattr(module, part, None)
            if isinstance(owner, torch.nn.ModuleDict) and adapter in owner:
                layers.append((f"{name}.{part}.{adapter}", owner[adapter]))
    if not layers:
        raise ConfigError(f"internal: the model has no LoRA layers of adapter {adapter!r}")
    return layers


@contextlib.contextmanager
def _active_and_trainable(model, adapter: str, layers):
    """``adapter`` active with its LoRA weights requiring gradients inside the block; everything as before after."""
    before = model.active_adapter
    flags = [(p, p.requires_grad) for p in model.parameters()]  # set_adapter changes every adapter's flags
    was_training = model.training
    model.set_adapter(adapter)
    for _, layer in layers:
        layer.requires_grad_(True)
    model.eval()  # no dropout: a sample's gradient does not depend on its batch
    try:
        yield
    finally:
        model.set_adapter(before)
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


class _Taps:
    """Forward hooks on the LoRA layers: each call's input and the gradient reaching its output."""

    def __init__(self, layers) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.output_grads: dict[str, torch.Tensor] = {}
        self.handles = [layer.register_forward_hook(self._hook(name)) for name, layer in layers]

    def _hook(self, name: str):
        def hook(module, args, output):
            self.inputs[name] = args[0].detach()
            output.register_hook(lambda grad: self.output_grads.__setitem__(name, grad.detach()))

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _batches(sequences, batch_size: int) -> list[np.ndarray]:
    from llm4rec.llm.score import length_sorted_batches

    return length_sorted_batches([len(s) for s in sequences], batch_size)


def summed_answer_loss(model, sequences, targets: torch.Tensor, rows: np.ndarray, pad_id: int) -> torch.Tensor:
    """The sum over ``rows`` of each sample's answer loss (training's loss: cross-entropy of the answer token)."""
    from llm4rec.llm.score import left_pad, to_device
    from llm4rec.llm.train import answer_loss

    device = next(model.parameters()).device
    input_ids, mask = left_pad([sequences[i] for i in rows], pad_id)
    batch_targets = to_device(targets[torch.as_tensor(rows)], device)
    return answer_loss(model, to_device(input_ids, device), to_device(mask, device), batch_targets) * len(rows)


ONE_PASS_BYTES = 2**31  # per-sample LoRA gradients kept side by side up to this size (SmolLM2, 168 rows: 0.3 GB)


def lora_ggscores(
    model, adapter: str, sequences, targets, pad_id: int, batch_size: int = 16, progress: bool = False,
    one_pass_bytes: int = ONE_PASS_BYTES,
) -> np.ndarray:  # fmt: skip
    """GGscore of every sample: <grad of its answer loss, grad of the mean loss over all of them>, both over the
    LoRA weights of ``adapter`` (eval mode, float64 sums).

    One batched forward-backward pass when every sample's LoRA gradient fits in ``one_pass_bytes`` (float32): each
    sample's gradient is contracted from its LoRA layers' inputs and output gradients (sum_t delta_t x_t^T), kept,
    and dotted with their mean at the end. Otherwise two passes, which keep nothing per sample: the reference
    gradient first, then each sample's sum_t delta_t^T R x_t (module docstring)."""
    layers = lora_layers(model, adapter)
    weights = {name: layer.weight for name, layer in layers}
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    batches, n = _batches(sequences, batch_size), len(sequences)
    one_pass = n * sum(w.numel() for w in weights.values()) * 4 <= one_pass_bytes
    with _active_and_trainable(model, adapter, layers):
        bar = tqdm(total=len(batches) * (1 if one_pass else 2), desc="MEGG GGscores", unit="batch",
                   disable=not progress)  # fmt: skip
        taps = _Taps(layers)
        try:
            if one_pass:
                return _one_pass_ggscores(model, weights, taps, sequences, targets, batches, pad_id, bar)
            return _two_pass_ggscores(model, weights, taps, sequences, targets, batches, pad_id, bar)
        finally:
            taps.remove()
            bar.close()


def _tapped_backward(model, weights, taps, sequences, targets, rows, pad_id) -> tuple[torch.Tensor, ...]:
    """One batch's forward and backward: fills ``taps`` with every LoRA layer's input and output gradient, and
    returns the batch's summed gradient of each LoRA weight."""
    loss = summed_answer_loss(model, sequences, targets, rows, pad_id)
    return torch.autograd.grad(loss, list(weights.values()))


def _tapped(taps, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta [batch, tokens, out], x [batch, tokens, in]) of LoRA layer ``name`` in the last tapped pass."""
    return taps.output_grads[name].flatten(1, -2).float(), taps.inputs[name].flatten(1, -2).float()


def _one_pass_ggscores(model, weights, taps, sequences, targets, batches, pad_id, bar) -> np.ndarray:
    gradients = {name: torch.empty((len(sequences), *w.shape), dtype=torch.float32) for name, w in weights.items()}
    for rows in batches:
        _tapped_backward(model, weights, taps, sequences, targets, rows, pad_id)
        for name in weights:
            delta, x = _tapped(taps, name)
            gradients[name][torch.as_tensor(rows)] = torch.einsum("bto,bti->boi", delta, x).cpu()
        bar.update()
    scores = torch.zeros(len(sequences), dtype=torch.float64)
    for g in gradients.values():
        g = g.double()
        scores += torch.einsum("boi,oi->b", g, g.mean(0))
    return scores.numpy()


def _two_pass_ggscores(model, weights, taps, sequences, targets, batches, pad_id, bar) -> np.ndarray:
    n = len(sequences)
    reference = {name: torch.zeros_like(w, dtype=torch.float32) for name, w in weights.items()}
    for rows in batches:
        summed = _tapped_backward(model, weights, taps, sequences, targets, rows, pad_id)
        for name, g in zip(weights, summed, strict=True):
            reference[name] += g.float() / n
        bar.update()
    scores = torch.zeros(n, dtype=torch.float64)
    for rows in batches:
        _tapped_backward(model, weights, taps, sequences, targets, rows, pad_id)
        score = torch.zeros(len(rows), dtype=torch.float64)
        for name in weights:
            delta, x = _tapped(taps, name)
            score += torch.einsum("bto,oi,bti->b", delta, reference[name].to(delta.device), x).double().cpu()
        scores[torch.as_tensor(rows)] = score
        bar.update()
    return scores.numpy()
