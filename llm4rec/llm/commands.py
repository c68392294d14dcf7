"""``llm4rec backbone build``, ``llm4rec train`` and ``llm4rec predict``.

Heavy imports (torch, transformers, peft) happen inside the commands so that
``llm4rec --help`` stays fast.
"""

from __future__ import annotations

import argparse


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


def quiet_libraries() -> None:
    """No per-file progress bars from transformers (weights) and datasets (Arrow files) under --quiet."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def cmd_backbone_build(args: argparse.Namespace) -> int:
    if args.quiet:
        quiet_libraries()
    from llm4rec.cli import data_config_from_args
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
    if args.quiet:
        quiet_libraries()
    from llm4rec.config import load_config
    from llm4rec.llm.run import LoraRunConfig, run_lora

    config = load_config(LoraRunConfig, args.config)
    if args.out:
        config.out = args.out
    run_lora(config, progress=not args.quiet)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.quiet:
        quiet_libraries()
    from llm4rec.cli import data_config_from_args
    from llm4rec.data.config import load_timeline
    from llm4rec.errors import ConfigError
    from llm4rec.llm.adapters import load_adapter, read_adapter_meta, template_from_meta
    from llm4rec.llm.backbone import BackboneConfig, load_backbone
    from llm4rec.llm.prompts import load_template, template_for_dataset
    from llm4rec.llm.run import predict_period
    from llm4rec.llm.samples import build_samples

    config = data_config_from_args(args)
    if args.adapter and args.template:
        raise ConfigError("--template: an adapter carries the template it was trained with; drop --template")
    if args.adapter:
        template = template_from_meta(read_adapter_meta(args.adapter), args.adapter)
    else:
        template = load_template(args.template or template_for_dataset(config.name))
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backbone = load_backbone(
        BackboneConfig(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code), template, device
    )
    model = load_adapter(backbone, args.adapter) if args.adapter else backbone.model
    timeline = load_timeline(config)
    rows = timeline.period(args.period, "all" if args.split == "test" else args.split)
    samples = build_samples(rows, timeline.items, template, backbone.tokenizer, args.cutoff)
    row = predict_period(
        model, backbone, timeline, rows, samples, "predict", args.out, args.batch_size, progress=not args.quiet
    )
    print(
        f"{config.name} period {args.period} ({args.split}, {len(rows):,} samples): AUC {row.auc:.4f}  "
        f"gAUC {row.gauc:.4f}  LogLoss {row.logloss:.4f}  ({row.n / row.seconds:.1f} samples/s) -> {args.out}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from llm4rec.cli import add_data_options

    backbone = commands.add_parser("backbone", help="build an offline scratch backbone")
    backbone_commands = backbone.add_subparsers(dest="backbone_command", metavar="SUBCOMMAND")
    backbone.set_defaults(func=lambda _args: backbone.print_help() or 2)
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
        "`accelerate launch scripts/train_lsat.py --config CONFIG`.",
    )
    train.add_argument("--config", required=True, help="a LoRA run config YAML (see configs/llm/)")
    train.add_argument("--out", help="override the config's output directory")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)

    predict = commands.add_parser(
        "predict",
        help="score a period with a backbone (and an adapter) and write P(Yes) per sample",
        description="Score every sample of a period: one forward pass per batch, P(Yes) from the two answer-token "
        "logits. Writes user_id,item_id,label,p_yes,prompt and prints AUC / gAUC / LogLoss.",
    )
    predict.add_argument("--model", required=True, help="base model: a local directory or a Hugging Face id")
    predict.add_argument("--adapter", help="a LoRA adapter directory written by llm4rec (safetensors)")
    add_data_options(predict, positional=False)
    predict.add_argument("--period", type=int, required=True, help="period to score")
    predict.add_argument(
        "--split", choices=["test", "train", "val"], default="test", help="test = the whole period (default)"
    )
    predict.add_argument("--out", required=True, help="CSV file for the predictions")
    predict.add_argument("--template", help="prompt template without an adapter (default: the dataset's)")
    predict.add_argument("--cutoff", type=int, default=512, help="prompt token limit (default 512)")
    predict.add_argument("--batch-size", type=int, default=64, help="prompts per forward pass (default 64)")
    predict.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    predict.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    predict.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (off by default)")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(func=cmd_predict)
