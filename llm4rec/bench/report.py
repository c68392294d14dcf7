"""Benchmark output: one JSON line per measurement as it is made, then readable markdown tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO


class Emitter:
    """Prints each record as a JSON line to ``out`` (and appends it to ``jsonl`` when given); keeps them all."""

    def __init__(self, out: TextIO = sys.stdout, jsonl: str | None = None):
        self.out, self.jsonl = out, jsonl
        self.records: list[dict] = []
        if jsonl:
            Path(jsonl).parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, records: list[dict]) -> None:
        for record in records:
            line = json.dumps(record)
            print(line, file=self.out, flush=True)
            if self.jsonl:
                with open(self.jsonl, "a", encoding="utf-8") as file:
                    file.write(line + "\n")
            self.records.append(record)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _measurements(records: list[dict], bench: str) -> list[dict]:
    return [r for r in records if r.get("bench") == bench and r.get("kind") != "ratio"]


def scoring_table(records: list[dict]) -> str | None:
    rows = _measurements(records, "score")
    if not rows:
        return None
    ours = {(r["arch"], r["dtype"], r["batch_size"]): r["samples_per_s"] for r in rows if r["path"] == "ours"}
    with_mfu = any("forward_mfu" in r for r in rows)
    header = ["arch", "dtype", "batch", "path", "samples/s", "tokens/s", "peak MB", "ours is x faster"]
    table = []
    for r in rows:
        speedup = ours[(r["arch"], r["dtype"], r["batch_size"])] / r["samples_per_s"]
        row = [
            r["arch"],
            r["dtype"],
            r["batch_size"],
            r["path"],
            r["samples_per_s"],
            r["tokens_per_s"],
            r["peak_mem_mb"],
            "" if r["path"] == "ours" else round(speedup, 2),
        ]
        if with_mfu:
            row.append(f"{r['forward_mfu']:.1%}" if "forward_mfu" in r else "")
        table.append(row)
    if with_mfu:
        header.append("forward MFU")
    return "Scoring\n\n" + _table(header, table)


def training_table(records: list[dict]) -> str | None:
    rows = _measurements(records, "train")
    if not rows:
        return None
    header = ["arch", "dtype", "batch", "path", "steps", "samples/s", "tokens/s", "peak MB"]
    table = [
        [
            r["arch"],
            r["dtype"],
            r["batch_size"],
            r["path"],
            r["steps"],
            r["samples_per_s"],
            r["tokens_per_s"],
            r["peak_mem_mb"],
        ]
        for r in rows
    ]
    return "LoRA training\n\n" + _table(header, table)


def lsat_table(records: list[dict]) -> str | None:
    rows = _measurements(records, "lsat")
    if not rows:
        return None
    header = ["arch", "dtype", "batch", "path", "samples/s", "peak MB"]
    table = [[r["arch"], r["dtype"], r["batch_size"], r["path"], r["samples_per_s"], r["peak_mem_mb"]] for r in rows]
    return "LSAT inference\n\n" + _table(header, table)


def megg_table(records: list[dict]) -> str | None:
    rows = _measurements(records, "megg")
    if not rows:
        return None
    header = ["arch", "dtype", "batch", "n", "path", "seconds", "samples/s", "peak MB"]
    table = [
        [r["arch"], r["dtype"], r["batch_size"], r["n"], r["path"], r["seconds"], r["samples_per_s"], r["peak_mem_mb"]]
        for r in rows
    ]
    return "MEGG GGscores over the LoRA weights\n\n" + _table(header, table)


def ctr_table(records: list[dict]) -> str | None:
    rows = _measurements(records, "ctr")
    if not rows:
        return None
    header = ["model", "parameters", "train samples/s", "score samples/s"]
    table = [[r["model"], r["parameters"], r["train_samples_per_s"], r["score_samples_per_s"]] for r in rows]
    return f"CTR models ({rows[0]['device']}, {rows[0]['rows']:,} rows)\n\n" + _table(header, table)


def targets_table(records: list[dict]) -> str | None:
    rows = [r for r in records if r.get("kind") == "ratio"]
    if not rows:
        return None
    header = ["bench", "arch", "dtype", "batch", "ratio of", "ratio", "target", "met"]
    table = [
        [
            r["bench"],
            r["arch"],
            r["dtype"],
            r["batch_size"],
            r["what"],
            r["ratio"],
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r["met"]],
        ]
        for r in rows
    ]
    return "Ratios against targets\n\n" + _table(header, table)


def markdown_report(records: list[dict]) -> str:
    tables = [t(records) for t in (scoring_table, training_table, megg_table, lsat_table, ctr_table, targets_table)]
    return "\n\n".join(t for t in tables if t)
