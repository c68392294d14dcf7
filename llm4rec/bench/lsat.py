"""LSAT inference: what the two-adapter ensemble and the merged adapter cost against one adapter.

One PeftModel holds two LoRA adapters, "long" and "short" (r=8 on q/v, with
random B so their deltas are not zero). Measured over the same prompts,
interleaved, all through our scorer (length-sorted batches, shared-prefix
cache): one adapter; the ensemble (:mod:`llm4rec.llm.ensemble`) as two passes
(``set_adapter`` between) and as one pass of mixed-adapter batches (peft's
``adapter_names``); the merged adapter (``cat``: rank 16); and, after
``merge_and_unload``, the plain model against a bare base model of the same
architecture.

The ensemble's floor is 2x one adapter (two adapters' compute); the target is
at most 2.2x and no slower than two passes. ``batch_size`` is rows per
forward for every path: the one pass stacks half as many prompts twice. A merged-and-unloaded model is a
plain model, so it should run within 5% of the bare base model.
"""

from __future__ import annotations

import numpy as np

from llm4rec.bench.llm import randomize_lora_b, ratio_record, timing_record
from llm4rec.bench.measure import interleaved_on
from llm4rec.bench.settings import LlmBench

ENSEMBLE_CEILING = 2.2  # ensemble time / one adapter's time
UNLOAD_TOLERANCE = 0.05  # merged-and-unloaded vs bare base, relative


def two_adapters(base):
    """``base`` wrapped with adapters "long" and "short", each with random (non-zero) B matrices."""
    from llm4rec.llm.train import LoraSettings, attach_lora

    model = attach_lora(base, LoraSettings(), adapter_name="long")
    attach_lora(model, LoraSettings(), adapter_name="short")
    randomize_lora_b(model, seed=0)
    model.set_adapter("long")
    return model.eval()


def bench_lsat(bench: LlmBench) -> list[dict]:
    from llm4rec.llm.ensemble import score_ensemble
    from llm4rec.llm.merge import merge_adapters
    from llm4rec.llm.score import score_margins, score_sequences

    settings, data, device = bench.settings, bench.data, bench.device
    batch_size = settings.lsat_batch_size
    sequences = data.sequences[: settings.lsat_n or settings.n]
    answers, pad = data.answer_ids, data.pad_id
    model = two_adapters(bench.model)
    bare = bench.fresh_model()

    def score(seqs, adapter: str | None = None, on=model):
        """Our scorer (shared-prefix cache) on ``on``, with ``adapter`` made active first."""
        if adapter is not None:
            model.set_adapter(adapter)
        return score_sequences(on, seqs, answers, pad, batch_size, device)

    def ensemble(seqs, passes: str):
        return score_ensemble(model, seqs, answers, pad, passes=passes, batch_size=batch_size, device=device)

    merge_adapters(model, "long", "short", 0.5, "exact", "merged")  # rank 16: the two adapters stacked
    paths = {
        "one adapter": lambda seqs: score_margins(model, seqs, answers, pad, ("long",), "two", batch_size, device),
        "ensemble, two passes": lambda seqs: ensemble(seqs, "two"),
        "ensemble, one pass": lambda seqs: ensemble(seqs, "one"),
        "merged adapter (cat)": lambda seqs: score(seqs, "merged"),
    }
    timings, _ = interleaved_on(paths, sequences, batch_size, device, settings.repeats)

    merged_scores = score(sequences, "merged")
    unloaded = model.merge_and_unload()  # folds the active (merged) adapter into the base weights
    unloaded_scores = score(sequences, on=unloaded)
    plain = {
        "merge_and_unload": lambda seqs: score(seqs, on=unloaded),
        "bare base model": lambda seqs: score(seqs, on=bare),
    }
    timings.update(interleaved_on(plain, sequences, batch_size, device, settings.repeats)[0])
    bench.model = unloaded  # the base model (now with the merged delta in its weights)

    records = [timing_record("lsat", name, t, bench, batch_size, len(sequences)) for name, t in timings.items()]
    common = {"arch": bench.arch.name, "batch_size": batch_size, "dtype": settings.dtype}

    def cost(name: str, reference: str) -> float:
        return timings[name].best / timings[reference].best

    def target(what: str, name: str, reference: str, goal: str, met) -> None:
        ratio = cost(name, reference)
        records.append(ratio_record("lsat", what, ratio, goal, met(ratio), **common))

    target(
        "ensemble two passes / one adapter (time)",
        "ensemble, two passes",
        "one adapter",
        "about 2 (info)",
        lambda r: None,
    )
    target(
        "ensemble one pass / one adapter (time)",
        "ensemble, one pass",
        "one adapter",
        f"<= {ENSEMBLE_CEILING}",
        lambda r: r <= ENSEMBLE_CEILING,
    )
    target(
        "ensemble one pass / two passes (time)",
        "ensemble, one pass",
        "ensemble, two passes",
        "<= 1",
        lambda r: r <= 1.0,
    )
    target(
        "merged adapter / one adapter (time)", "merged adapter (cat)", "one adapter", "about 1 (info)", lambda r: None
    )
    unload = cost("merge_and_unload", "bare base model")
    records.append(
        ratio_record(
            "lsat",
            "merge_and_unload / bare base model (time)",
            unload,
            f"within {UNLOAD_TOLERANCE:.0%}",
            abs(unload - 1) <= UNLOAD_TOLERANCE,
            **common,
            max_abs_diff_merged_vs_unloaded=float(np.max(np.abs(merged_scores - unloaded_scores))),
        )
    )
    return records
