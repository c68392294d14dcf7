"""MEGG's GGscores on an LLM: what selecting replayed samples costs against one gradient pass over them.

``<method>+MEGG`` scores a pool of reservoir rows by <grad of a row's answer loss, grad of the pool's mean loss>
over the LoRA weights (:func:`llm4rec.llm.replay.lora_ggscores`). Measured over the same prompts, interleaved,
under the training steps' attention (as the runs do): one plain forward-backward pass over the rows (the
gradient of their summed answer loss with respect to the LoRA weights, nothing kept: the floor), the one-pass
GGscores (each row's LoRA gradient contracted from the layers' taps and kept) and the two-pass form (nothing
kept per row). The target: the one-pass GGscores cost at most 1.25x the plain pass, so MEGG's selection costs
what one more look at its pool costs.
"""

from __future__ import annotations

import numpy as np
import torch

from llm4rec.bench.llm import randomize_lora_b, ratio_record, timing_record
from llm4rec.bench.measure import interleaved_on
from llm4rec.bench.settings import LlmBench

GGSCORE_CEILING = 1.25  # one-pass GGscores time / one plain gradient pass over the same rows


def bench_ggscores(bench: LlmBench) -> list[dict]:
    from llm4rec.llm.replay import ONE_PASS_BYTES, lora_ggscores, lora_layers, summed_answer_loss
    from llm4rec.llm.score import length_sorted_batches
    from llm4rec.llm.train import (
        LoraSettings,
        LoraTrainConfig,
        attach_lora,
        attention_implementation,
        training_attention,
    )

    settings, data, device = bench.settings, bench.data, bench.device
    batch_size = settings.train_batch_size
    sequences = data.sequences[: settings.n]
    targets = np.where(data.labels[: len(sequences)] == 1, *data.answer_ids)
    model = attach_lora(bench.fresh_model(), LoraSettings(), adapter_name="megg")
    randomize_lora_b(model, settings.seed)
    weights = [layer.weight for _, layer in lora_layers(model, "megg")]
    for weight in weights:
        weight.requires_grad_(True)
    model.eval()

    def gradient_pass(seqs):
        labels = torch.as_tensor(targets[: len(seqs)], dtype=torch.long)
        for rows in length_sorted_batches([len(s) for s in seqs], batch_size):
            torch.autograd.grad(summed_answer_loss(model, seqs, labels, rows, data.pad_id), weights)

    def ggscores(seqs, one_pass_bytes=ONE_PASS_BYTES):
        return lora_ggscores(model, "megg", seqs, targets[: len(seqs)], data.pad_id, batch_size,
                             one_pass_bytes=one_pass_bytes)  # fmt: skip

    paths = {
        "gradient pass (floor)": gradient_pass,
        "GGscores, one pass": ggscores,
        "GGscores, two passes": lambda seqs: ggscores(seqs, one_pass_bytes=0),
    }
    attention = training_attention(model.get_base_model(), LoraTrainConfig(), device)
    with attention_implementation(model, attention):
        timings, outputs = interleaved_on(paths, sequences, batch_size, device, settings.repeats)

    records = [
        timing_record("megg", name, t, bench, batch_size, len(sequences), train_attention=attention)
        for name, t in timings.items()
    ]
    one, two = outputs["GGscores, one pass"], outputs["GGscores, two passes"]
    common = {"arch": bench.arch.name, "batch_size": batch_size, "dtype": settings.dtype}
    floor = timings["gradient pass (floor)"].best
    ratio = timings["GGscores, one pass"].best / floor
    records.append(
        ratio_record(
            "megg",
            "GGscores one pass / gradient pass (time)",
            ratio,
            f"<= {GGSCORE_CEILING}",
            ratio <= GGSCORE_CEILING,
            **common,
            max_rel_diff_one_vs_two_passes=float(np.max(np.abs(one - two)) / max(np.max(np.abs(two)), 1e-30)),
        )
    )
    ratio = timings["GGscores, two passes"].best / floor
    records.append(ratio_record("megg", "GGscores two passes / gradient pass (time)", ratio, "about 2 (info)", None,
                                **common))  # fmt: skip
    return records
