"""Scoring and LoRA training: ours against the peer, same model, data, dtype and batch size, in one run.

Scoring, per batch size: :func:`llm4rec.llm.score.score_sequences` against the
full-logits peer and the ``generate`` peer (:mod:`llm4rec.bench.peer`), each
over the same ``n`` prompts, interleaved. Training: :func:`train_lora` against
``transformers.Trainer``, both LoRA r=8 on q_proj/v_proj from a fresh adapter,
timed over ``train_steps`` optimizer steps after ``warmup_steps`` untimed ones.
Tokens are the prompts' real tokens (no padding, no answer token).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile

import numpy as np
import torch

from llm4rec.bench.flops import forward_flops, mfu
from llm4rec.bench.measure import PeakMemory, Timing, interleaved_on, memory_kind, run_measured, synchronize
from llm4rec.bench.peer import peer_generate_scores, peer_logits_scores, peer_trainer
from llm4rec.bench.settings import LlmBench, peak_tflops
from llm4rec.llm.score import (
    MIN_SHARED_PREFIX,
    answer_probability,
    iter_last_token_logits,
    iter_last_token_states,
    prefix_cache_applies,
    score_sequences,
    shared_prefix_length,
)

SCORING_TARGET = 1.5  # ours / peer samples per second
TRAINING_TARGET = 1.3  # ours / peer tokens per second, with lower peak memory
MEMORY_OVERHEAD_TARGET = 1.05  # ReLoop2 on an LLM row: scoring with the memory's read and write / scoring alone


def timing_record(bench_name: str, path: str, timing, bench, batch_size: int, n: int, **fields) -> dict:
    """One path's measurement over ``n`` inputs: its best time, rate and peak memory, with the run's context."""
    return {
        "bench": bench_name,
        "path": path,
        **bench.context(),
        "batch_size": batch_size,
        "n": n,
        "seconds": round(timing.best, 4),
        "repeats": len(timing.seconds),
        "samples_per_s": round(n / timing.best, 2),
        "peak_mem_mb": round(timing.peak_mb, 1),
        "memory": memory_kind(bench.device),
        **fields,
    }


def randomize_lora_b(model, seed: int) -> None:
    """Every LoRA B matrix of ``model`` set to small random values (peft starts them at zero), so the adapters'
    deltas and the LoRA weights' gradients are those of a trained adapter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                values = torch.randn(parameter.shape, generator=generator) * 0.02
                parameter.copy_(values.to(parameter.device, parameter.dtype))


def ratio_record(bench: str, what: str, ratio: float, target: str, met: bool | None, **fields) -> dict:
    """A ratio against its target; ``met`` None: a ratio shown for information."""
    return {
        "bench": bench,
        "kind": "ratio",
        "what": what,
        "ratio": round(ratio, 3),
        "target": target,
        "met": met,
        **fields,
    }


@torch.inference_mode()
def score_without_shared_prefix(bench: LlmBench, sequences, batch_size: int) -> np.ndarray:
    """Our scorer with every prompt run whole: what the shared-prefix cache saves."""
    model, data = bench.model, bench.data
    p = np.empty(len(sequences))
    batches = iter_last_token_logits(
        model, sequences, data.pad_id, batch_size, bench.device, share_prefix=False, token_ids=data.answer_ids
    )
    for batch, logits in batches:
        p[batch] = answer_probability(logits).cpu().numpy()
    return p


@torch.inference_mode()
def score_with_error_memory(bench: LlmBench, sequences, batch_size: int) -> np.ndarray:
    """Our scorer as an ``<LLM method>+ReLoop2`` row runs it: the final hidden states caught in the same forward
    pass, and each batch read from ReLoop2's error sketch (K 100 arrays of 2^10 buckets, the defaults) before its
    labels are written. Returns the base P(Yes), so its scores compare with ours; what it adds is the memory's
    cost (the compensation itself is one clamp)."""
    from llm4rec.incremental.config import ReLoop2Config
    from llm4rec.incremental.error_memory import build_memory

    model, data = bench.model, bench.data
    labels = data.labels
    p, memory = np.empty(len(sequences)), None
    batches = iter_last_token_states(
        model, sequences, data.pad_id, batch_size, bench.device, token_ids=data.answer_ids, hidden=True
    )
    for batch, logits, hidden in batches:
        probability = answer_probability(logits).cpu().numpy()
        vectors = hidden.float().cpu().numpy()
        memory = memory or build_memory(ReLoop2Config(), vectors.shape[1], seed=0)
        memory.read_then_write(vectors, labels[batch], probability)
        p[batch] = probability
    return p


def scoring_paths(bench: LlmBench, batch_size: int) -> dict:
    """name -> function(sequences) -> P(Yes) array, for every path measured."""
    model, data, device = bench.model, bench.data, bench.device
    paths = {"ours": lambda seqs: score_sequences(model, seqs, data.answer_ids, data.pad_id, batch_size, device)}
    if bench.settings.ablation:
        paths["ours, no shared prefix"] = lambda seqs: score_without_shared_prefix(bench, seqs, batch_size)
        paths["ours + ReLoop2 memory"] = lambda seqs: score_with_error_memory(bench, seqs, batch_size)
    if bench.settings.compile:
        compiled = torch.compile(model, dynamic=True)
        paths["ours+compile"] = lambda seqs: score_sequences(
            compiled, seqs, data.answer_ids, data.pad_id, batch_size, device
        )
    peers = {"logits": peer_logits_scores, "generate": peer_generate_scores}
    for name in bench.settings.peers:
        paths[f"peer-{name}"] = lambda seqs, score=peers[name]: score(
            model, seqs, data.answer_ids, data.pad_id, batch_size, device
        )
    return paths


def bench_scoring(bench: LlmBench) -> list[dict]:
    settings, data = bench.settings, bench.data
    sequences = data.sequences[: settings.n]
    tokens = int(sum(len(s) for s in sequences))
    lengths = [len(s) for s in sequences]
    prefix = shared_prefix_length(sequences) if prefix_cache_applies(bench.model) else 0
    prefix = prefix if prefix >= MIN_SHARED_PREFIX else 0
    flops = {  # what each path computes on real tokens (see llm4rec.bench.flops)
        "ours": forward_flops(bench.arch, lengths, 1, prefix),
        "ours+compile": forward_flops(bench.arch, lengths, 1, prefix),
        "peer-logits": forward_flops(bench.arch, lengths, None),
    }
    peak = peak_tflops(settings, bench.device)
    records = []
    for batch_size in settings.batch_sizes:
        paths = scoring_paths(bench, batch_size)
        timings, outputs = interleaved_on(paths, sequences, batch_size, bench.device, settings.repeats)
        for name, timing in timings.items():
            record = timing_record(
                "score", name, timing, bench, batch_size, len(sequences),
                tokens_per_s=round(tokens / timing.best, 1),
                max_abs_diff_vs_ours=float(np.max(np.abs(outputs[name] - outputs["ours"]))),
            )  # fmt: skip
            if peak is not None:
                path_flops = flops.get(name, forward_flops(bench.arch, lengths))
                record["forward_mfu"] = round(mfu(path_flops, timing.best, peak), 4)
                record["peak_tflops"] = peak
            records.append(record)
        common = {"arch": bench.arch.name, "batch_size": batch_size, "dtype": settings.dtype}
        ours = [name for name in paths if not name.startswith("peer-")]  # ours, its ablation, compiled
        for name in paths:
            if not name.startswith("peer-"):
                continue
            for mine in ours:
                ratio = timings[name].best / timings[mine].best
                met = ratio >= SCORING_TARGET if mine == "ours" else None  # the others: for information
                records.append(
                    ratio_record("score", f"{mine} / {name} samples/s", ratio, f">= {SCORING_TARGET}", met, **common)
                )
        if "ours + ReLoop2 memory" in timings:
            ratio = timings["ours + ReLoop2 memory"].best / timings["ours"].best
            records.append(
                ratio_record(
                    "score",
                    "ours + ReLoop2 memory / ours seconds",
                    ratio,
                    f"<= {MEMORY_OVERHEAD_TARGET}",
                    ratio <= MEMORY_OVERHEAD_TARGET,
                    **common,
                )
            )
        if "ours, no shared prefix" in timings:
            ratio = timings["ours, no shared prefix"].best / timings["ours"].best
            records.append(
                ratio_record(
                    "score",
                    "ours / ours, no shared prefix samples/s",
                    ratio,
                    "(what the shared prefix saves)",
                    None,
                    **common,
                )
            )
    return records


# ---------------------------------------------------------------- LoRA training


def our_training_run(bench: LlmBench, timing: Timing, share_prompt_prefix: str = "exact",
                     attention: str = "auto") -> None:  # fmt: skip
    """``train_lora`` on a fresh adapter: a warm-up run, then the measured one (its own clock, evaluation out)."""
    from llm4rec.llm.train import LoraSettings, LoraTrainConfig, attach_lora, train_lora

    settings, data = bench.settings, bench.data
    batch_size, steps = settings.train_batch_size, settings.train_steps
    config = LoraTrainConfig(
        epochs=1,
        batch_size=batch_size,
        eval_at_start=False,
        patience=1,
        max_val_samples=batch_size,
        eval_batch_size=batch_size,
        mixed_precision=settings.mixed_precision,
        share_prompt_prefix=share_prompt_prefix,
        attention=attention,
        seed=settings.seed,
    )
    val = data.head(batch_size).as_samples()
    model = attach_lora(bench.model, LoraSettings(dropout=settings.lora_dropout))
    try:
        measured = data.head(steps * batch_size)
        with contextlib.redirect_stdout(sys.stderr):  # its evaluation lines; stdout carries the JSON lines
            if settings.warmup_steps:
                warm = data.head(settings.warmup_steps * batch_size).as_samples()
                train_lora(model, data.tokenizer, data.answer_ids, warm, val, config, progress=False)
            with PeakMemory(bench.device) as peak:
                result = train_lora(
                    model, data.tokenizer, data.answer_ids, measured.as_samples(), val, config, progress=False
                )
        samples = len(measured.sequences)
        timing.seconds.append(samples / result.train_samples_per_second)
        timing.peak_mb = max(timing.peak_mb, peak.megabytes)
        timing.extra = {"samples": samples, "tokens": int(measured.lengths.sum()), "steps": result.steps}
    finally:
        bench.model = model.unload()  # the bare base model again, for the next run


def peer_training_run(bench: LlmBench, timing: Timing) -> None:
    """``Trainer.train()`` on a fresh adapter; the steps after the warm-up ones are timed."""
    from llm4rec.llm.train import LoraSettings, attach_lora

    settings, data = bench.settings, bench.data
    batch_size, warmup, steps = settings.train_batch_size, settings.warmup_steps, settings.train_steps
    model = attach_lora(bench.model, LoraSettings(dropout=settings.lora_dropout))
    output_dir = tempfile.mkdtemp(prefix="llm4rec-peer-")
    try:
        trainer, collator, clock = peer_trainer(
            model,
            data.head((warmup + steps) * batch_size),
            batch_size,
            warmup + steps,
            bench.device,
            settings.mixed_precision,
            seed=settings.seed,
            output_dir=output_dir,
        )
        whole_run = Timing()
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its summary dict
            run_measured(trainer.train, bench.device, whole_run)  # for its peak memory; the clock times steps
        timing.peak_mb = max(timing.peak_mb, whole_run.peak_mb)
        timing.seconds.append(clock.ends[-1] - clock.ends[warmup])  # ends[k]: end of step k (ends[0]: start)
        timing.extra = {"samples": steps * batch_size, "tokens": sum(collator.prompt_tokens[warmup:]), "steps": steps}
    finally:
        bench.model = model.unload()
        shutil.rmtree(output_dir, ignore_errors=True)


def bench_training(bench: LlmBench) -> list[dict]:
    settings = bench.settings
    runs = {"ours": our_training_run, "peer-trainer": peer_training_run}
    if settings.ablation and settings.lora_dropout > 0:  # "exact" runs every row whole under dropout
        runs["ours, shared prefix (always)"] = lambda b, t: our_training_run(b, t, share_prompt_prefix="always")
    elif settings.ablation:  # dropout 0: "exact" shares the prefix
        runs["ours, no shared prefix"] = lambda b, t: our_training_run(b, t, share_prompt_prefix="never")
    if settings.ablation:
        # train.attention: auto runs eager attention on a CPU; this one keeps the model's own (SDPA by default)
        runs["ours, the model's attention"] = lambda b, t: our_training_run(b, t, attention="model")
    timings = {name: Timing() for name in runs}
    for _ in range(settings.repeats):
        for name, run in runs.items():
            run(bench, timings[name])
    synchronize(bench.device)
    records = []
    for name, timing in timings.items():
        extra = timing.extra
        records.append(
            {
                "bench": "train",
                "path": name,
                **bench.context(),
                "batch_size": settings.train_batch_size,
                "steps": extra["steps"],
                "samples": extra["samples"],
                "tokens": extra["tokens"],
                "seconds": round(timing.best, 4),
                "repeats": len(timing.seconds),
                "samples_per_s": round(extra["samples"] / timing.best, 2),
                "tokens_per_s": round(extra["tokens"] / timing.best, 1),
                "peak_mem_mb": round(timing.peak_mb, 1),
                "memory": memory_kind(bench.device),
            }
        )
    by_path = {r["path"]: r for r in records}
    peer = by_path["peer-trainer"]
    common = {"arch": bench.arch.name, "batch_size": settings.train_batch_size, "dtype": settings.dtype}
    for mine in [name for name in by_path if name != "peer-trainer"]:
        ours = by_path[mine]
        ratio = ours["tokens_per_s"] / peer["tokens_per_s"]
        memory_ratio = ours["peak_mem_mb"] / max(peer["peak_mem_mb"], 1e-9)
        met = ratio >= TRAINING_TARGET and memory_ratio < 1 if mine == "ours" else None
        records.append(
            ratio_record(
                "train",
                f"{mine} / peer-trainer tokens/s",
                ratio,
                f">= {TRAINING_TARGET}, lower peak memory",
                met,
                **common,
                memory_ratio=round(memory_ratio, 3),
            )
        )
    return records
