"""Tables and plots from saved results, without training: ``llm4rec report DIR``.

For a comparison directory the rows come from its per-period files (the runs
its ``experiment.json`` names); for the output of ``llm4rec lsat`` / ``ctr`` /
``popularity`` they come from ``results.json``. Either way the same writers
produce ``results.{json,csv,md}``, ``auc_per_period.png`` and ``auc_mean.png``,
so a report rebuilt from disk is identical to the one the run wrote.
"""

from __future__ import annotations

from pathlib import Path

from llm4rec.compare.store import MANIFEST, ResultStore
from llm4rec.errors import Llm4recError
from llm4rec.eval.results import ResultRow


def _sides(manifest: dict) -> dict[str, str]:
    """method -> llm, ctr or reference, in config order."""
    side = {run["method"]: run["side"] for run in manifest["runs"]}
    return {m: side[m] for m in manifest["methods"] if m in side}


def _notes(manifest: dict, rows: list[ResultRow]) -> str:
    config = manifest["config"]
    side = _sides(manifest)
    llm_methods = [m for m, s in side.items() if s == "llm"]
    periods = manifest["tested_periods"]
    data = manifest["dataset"]["data"]
    samples = manifest["test_samples"]
    lines = [
        f"Dataset {data['name']}, {data['periods']['n_periods']} periods; every method trains through period t "
        f"and is tested on t + 1 for t + 1 in {periods[0]}..{periods[-1]}, on "
        f"{'all' if samples is None else f'the same {samples:,}'} samples of each tested period.",
    ]
    if llm_methods and config.get("llm"):
        llm = config["llm"]
        lines.append(
            f"LLM methods ({', '.join(llm_methods)}): LoRA on {llm['backbone']['model_name_or_path']}, "
            f"seeds {config['seeds']['llm']}."
        )
    ctr_methods = [m for m, s in side.items() if s == "ctr"]
    if ctr_methods and config.get("ctr"):
        lines.append(
            f"CTR methods: pre-trained on periods 0..{config['ctr']['pretrain_periods'] - 1}, updated every period "
            f"from then on, seeds {config['seeds']['ctr']}."
        )
    if "reference" in side.values():
        lines.append("Popularity: each item's smoothed positive rate over periods 0..t (the reference).")
    missing = {r["method"] for r in manifest["runs"]} - {r.method for r in rows}
    expected = len(manifest["runs"]) * len(periods)
    if len(rows) < expected:
        lines.append(
            f"**Incomplete:** {len(rows)} of {expected} (method, seed, period) results are stored"
            + (f"; nothing yet for {sorted(missing)}" if missing else "")
            + ". Run the same command again to finish."
        )
    lines.append(
        "seconds: wall time of a method's fits and scoring over the tested periods (per seed); LLM methods that "
        "share an adapter (LSAT-long is FR through K-1; the ensemble reuses the long and short adapters) pay for it "
        "once, in the method that ran first."
    )
    return "\n\n".join(lines)


def write_report(directory: str | Path) -> dict[str, Path]:
    """Rewrite ``results.{json,csv,md}`` and the plots of ``directory`` from what is saved there."""
    from llm4rec.eval.report import read_results, write_run

    directory = Path(directory)
    store = ResultStore(directory)
    manifest = store.manifest() if (directory / MANIFEST).exists() else None
    if manifest is not None:
        rows = store.rows(manifest)
        name = manifest["dataset"]["data"]["name"]
        title = f"LLM and CTR update methods on {name}"
        notes = _notes(manifest, rows)
        side = _sides(manifest)
        highlight = {
            label: [m for m, s in side.items() if s == kind]
            for label, kind in (("LLM", "llm"), ("CTR", "ctr"), ("reference", "reference"))
        }
    elif (directory / "results.json").exists():
        rows = [r for r in read_results(directory) if r.period != "mean"]
        title, notes, name, highlight = f"Results in {directory}", None, directory.name, None
    else:
        raise Llm4recError(f"{directory}: no {MANIFEST} or results.json to report on")
    if not rows:
        raise Llm4recError(f"{directory}: no finished results yet")
    return write_run(directory, rows, title, plot_title=name, notes=notes, highlight=highlight,
                     plot_periods=True if manifest is not None else None)  # fmt: skip
