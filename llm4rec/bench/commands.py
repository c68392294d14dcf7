"""``llm4rec bench {score,train,lsat,ctr,all}``: our paths against the usual way, one JSON line per measurement.

Heavy imports (torch, transformers, peft) happen inside the command function so
that ``llm4rec --help`` stays fast.
"""

from __future__ import annotations

import argparse

BENCHES = ("score", "train", "megg", "lsat", "ctr")


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 8,32,64, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def machine_record(stage: str) -> dict:
    """Versions and the load on the machine (other processes share it: the ratios are robust to load, the
    absolute rates are not)."""
    import os
    import platform

    import peft
    import torch
    import transformers

    record = {
        "bench": "machine",
        "stage": stage,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
    }
    if hasattr(os, "getloadavg"):
        record["load_average_1_5_15_min"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name()
    return record


def llm_settings(args: argparse.Namespace, arch: str):
    from llm4rec.bench.data import LengthSpec
    from llm4rec.bench.settings import LlmBenchSettings

    return LlmBenchSettings(
        arch=arch,
        vocab_size=args.vocab_size,
        device=args.device,
        dtype=args.dtype,
        attention=args.attention,
        n=args.n,
        batch_sizes=args.batch_sizes,
        train_batch_size=args.train_batch_size,
        lora_dropout=args.lora_dropout,
        train_steps=args.train_steps,
        warmup_steps=args.warmup_steps,
        lsat_batch_size=args.lsat_batch_size,
        lsat_n=args.lsat_n,
        repeats=args.repeats,
        peers=args.peers,
        lengths=LengthSpec.parse(args.lengths),
        shared_prefix=args.shared_prefix,
        prompts=args.prompts,
        compile=args.compile,
        ablation=args.ablation,
        peak_tflops=args.peak_tflops,
        seed=args.seed,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from llm4rec.bench.report import Emitter, markdown_report

    benches = BENCHES if args.bench == "all" else (args.bench,)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    # Every option is checked before the first measurement: a typo fails now, not after minutes of runs.
    llm_benches = [b for b in benches if b != "ctr"]
    settings = [llm_settings(args, arch) for arch in args.arch] if llm_benches else []
    ctr_settings = None
    if "ctr" in benches:
        from llm4rec.bench.ctr import CtrBenchSettings

        ctr_settings = CtrBenchSettings(
            args.ctr_models,
            args.ctr_rows,
            args.ctr_history_length,
            args.ctr_embedding_dim,
            args.device,
            args.ctr_threads,
        )
    emit = Emitter(jsonl=args.jsonl)
    emit([machine_record("start")])
    if llm_benches:
        from llm4rec.bench.llm import bench_scoring, bench_training
        from llm4rec.bench.lsat import bench_lsat
        from llm4rec.bench.replay import bench_ggscores
        from llm4rec.bench.settings import prepare

        # lsat last: it merges weights
        runs = {"score": bench_scoring, "train": bench_training, "megg": bench_ggscores, "lsat": bench_lsat}
        for setting in settings:
            bench = prepare(setting)
            for name in llm_benches:
                emit(runs[name](bench))
            del bench
            if setting.device.startswith("cuda"):
                torch.cuda.empty_cache()
    if ctr_settings is not None:
        from llm4rec.bench.ctr import bench_ctr

        emit(bench_ctr(ctr_settings))
    emit([machine_record("end")])
    print()
    print(markdown_report(emit.records))
    return 0


def _add_llm_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LLM (score, train, megg, lsat)")
    group.add_argument(
        "--arch",
        type=_names,
        default=["scratch-llama-small"],
        help="architectures, comma-separated: tinyllama-1.1b, llama2-7b, scratch-llama-tiny, scratch-llama-small "
        "(random weights; default scratch-llama-small)",
    )
    group.add_argument("--vocab-size", type=int, help="replace the architectures' vocabulary size (e.g. 32000)")
    group.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 (auto: bf16 on CUDA, else fp32)")
    group.add_argument("--attention", default="sdpa", help="sdpa (default), eager or flash_attention_2")
    group.add_argument("--n", type=int, default=128, help="prompts per scoring measurement (default 128)")
    group.add_argument(
        "--batch-sizes", type=_int_list, default=[8, 32, 64], help="scoring batch sizes (default 8,32,64)"
    )
    group.add_argument("--train-batch-size", type=int, default=16, help="LoRA training batch size (default 16)")
    group.add_argument(
        "--lora-dropout",
        type=float,
        default=0.0,
        help="LoRA dropout of the trained adapters (default 0, the configs' value: training shares the prompt "
        "prefix exactly; TALLRec's 0.05 makes every row run whole)",
    )
    group.add_argument("--train-steps", type=int, default=4, help="timed training steps per run (default 4)")
    group.add_argument("--warmup-steps", type=int, default=1, help="untimed training steps before them (default 1)")
    group.add_argument("--lsat-batch-size", type=int, default=32, help="LSAT inference batch size (default 32)")
    group.add_argument("--lsat-n", type=int, help="prompts per LSAT measurement (default: --n)")
    group.add_argument("--repeats", type=int, default=2, help="interleaved timed repeats per path (default 2)")
    group.add_argument(
        "--peers", type=_names, default=["logits", "generate"], help="scoring peers: logits,generate (default both)"
    )
    group.add_argument(
        "--lengths",
        default="167:18:95:255",
        help="synthetic prompt lengths MEAN:SD:LOW:HIGH (default 167:18:95:255, ML-100K under the scratch tokenizer)",
    )
    group.add_argument(
        "--shared-prefix", type=int, default=69, help="tokens all synthetic prompts begin with (default 69)"
    )
    group.add_argument(
        "--prompts",
        metavar="BACKBONE_DIR",
        help="real ML-100K period-6 prompts, tokenized by this backbone's tokenizer",
    )
    group.add_argument("--compile", action="store_true", help="also score through torch.compile(model)")
    group.add_argument(
        "--no-ablation",
        dest="ablation",
        action="store_false",
        help="skip ours with the other shared-prefix setting (scoring and training without it, or training with it "
        "always under LoRA dropout) and, in training, with the model's own attention",
    )
    group.add_argument(
        "--peak-tflops", type=float, help="device peak for MFU (default: 989 on H100/H200 in bf16/fp16, else no MFU)"
    )
    group.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    group.add_argument("--seed", type=int, default=0)


def _add_ctr_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("CTR (ctr)")
    group.add_argument("--ctr-models", type=_names, default=[], help="models (default: all seven and DCNv2)")
    group.add_argument("--ctr-rows", type=int, default=100_000, help="random ML-100K-shaped rows (default 100000)")
    group.add_argument("--ctr-history-length", type=int, default=30)
    group.add_argument("--ctr-embedding-dim", type=int, default=16)
    group.add_argument("--ctr-threads", type=int, default=1, help="torch CPU threads for CTR (default 1)")


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="throughput and memory: our scoring/training against the usual Hugging Face way",
        description="Measure ours against the peer (Trainer, padding to longest, full-vocabulary logits, generate) "
        "on the same random-init model, data, dtype and batch size, in one run. Prints one JSON line per "
        "measurement, then markdown tables.",
    )
    subcommands = bench.add_subparsers(dest="bench", metavar="BENCH")
    bench.set_defaults(func=lambda _args: bench.print_help() or 2)
    helps = {
        "score": "P(Yes) scoring: samples/s and peak memory, ours vs peers, at several batch sizes",
        "train": "LoRA training: tokens/s, samples/s and peak memory, ours vs transformers.Trainer",
        "megg": "MEGG's GGscores over the LoRA weights (one pass, two passes) vs one plain gradient pass",
        "lsat": "LSAT inference: ensemble in two passes vs one mixed pass, merged adapter, merge_and_unload",
        "ctr": "CTR models: training and scoring samples/s",
        "all": "all of the above (score, train, megg, lsat for each --arch, then ctr)",
    }
    for name, text in helps.items():
        sub = subcommands.add_parser(name, help=text, description=text)
        sub.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto (cuda when available)")
        sub.add_argument("--jsonl", metavar="FILE", help="also append the JSON lines to FILE")
        if name != "ctr":
            _add_llm_options(sub)
        if name in ("ctr", "all"):
            _add_ctr_options(sub)
        sub.set_defaults(func=cmd_bench)
