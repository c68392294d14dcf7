"""Running a comparison: every (method, seed) through the shared protocol, each tested period saved as it finishes.

A rerun of the same command reads what is stored under the current keys and
skips it: a finished (method, seed) run is not touched at all; a run stopped
half way is fitted again from its start (LLM fits find their adapters in the
adapter store, so only CTR models really retrain, in seconds) and only its
missing periods are scored and written. Ctrl-C can only lose the period in
progress: every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from llm4rec import __version__
from llm4rec.compare.config import ExperimentConfig
from llm4rec.compare.methods import MethodSpec
from llm4rec.compare.store import ResultStore, dataset_fingerprint
from llm4rec.errors import Llm4recError
from llm4rec.eval.results import ResultRow
from llm4rec.io import write_json

log = logging.getLogger("llm4rec.compare")
LOG_FILE = "compare.log"


@dataclass
class PlannedRun:
    spec: MethodSpec
    seed: int
    key: str
    dir: Path
    done: dict[int, ResultRow]


@dataclass
class CompareOutcome:
    rows: list[ResultRow]
    seconds: float
    scored: int  # (method, seed, period) results computed by this call
    reused: int  # ... found on disk


def plan(config: ExperimentConfig, store: ResultStore, fingerprint: str) -> list[PlannedRun]:
    runs = []
    for spec in config.specs:
        for seed in config.seeds_of(spec):
            key = config.unit_key(spec, seed, fingerprint)
            run_dir = store.run_dir(spec.name, seed, key)
            runs.append(PlannedRun(spec, seed, key, run_dir, store.finished(run_dir, config.tested_periods)))
    return runs


def manifest(config: ExperimentConfig, runs: list[PlannedRun], fingerprint: str, root: Path) -> dict:
    return {
        "llm4rec": __version__,
        "dataset": {"data": dataclasses.asdict(config.data), "fingerprint": fingerprint},
        "tested_periods": config.tested_periods,
        "test_samples": config.test_samples,
        "methods": [s.name for s in config.specs],
        "llm_methods": [s.name for s in config.specs if s.is_llm],
        "runs": [
            {
                "method": r.spec.name,
                "side": r.spec.side,
                "seed": r.seed,
                "key": r.key,
                "dir": str(r.dir.relative_to(root)),
            }
            for r in runs
        ],
        "config": config.to_dict(),
    }


class LlmSide:
    """One LoRA session per seed, opened on first use (a finished comparison never loads the backbone)."""

    def __init__(self, config: ExperimentConfig, timeline, out: Path, progress: bool) -> None:
        self.config, self.timeline, self.out, self.progress = config, timeline, out, progress
        self.methods: dict[int, dict] = {}

    def method(self, spec: MethodSpec, seed: int):
        if seed not in self.methods:
            from llm4rec.llm.lsat import PeriodAdapters, build_methods, open_session

            lsat = self.config.lsat_for_seed(seed, str(self.out / "llm" / f"seed_{seed}"))
            started = time.perf_counter()
            log.info("LLM seed %d: opening the backbone %s", seed, lsat.backbone.model_name_or_path)
            # A first run builds the scratch backbone (minutes): that gets its own bar; the fits report to the log.
            session = open_session(lsat, self.timeline, progress=False, build_progress=self.progress)
            log.info("LLM seed %d: backbone ready in %.1f s", seed, time.perf_counter() - started)
            self.methods[seed] = {m.name: m for m in build_methods(lsat, PeriodAdapters(session, lsat))}
        method = self.methods[seed][spec.lsat_name]
        method.name = spec.name
        return method


class CtrSide:
    def __init__(self, config: ExperimentConfig, timeline) -> None:
        self.config, self.timeline = config, timeline
        self.features = None

    def method(self, spec: MethodSpec, seed: int):
        from llm4rec.ctr.updates import timeline_features
        from llm4rec.incremental.registry import build_method

        ctr = self.config.ctr_config
        if self.features is None:
            self.features = timeline_features(self.timeline, self.config.data.label_threshold, ctr.features)
        if spec.window:
            ctr = dataclasses.replace(ctr, window=spec.window)
        method = build_method(spec.method, spec.model, self.features, ctr, seed)
        if method.name != spec.name:  # the registry's naming and ours must agree, or results land under two names
            raise Llm4recError(f"internal: {spec.name} was built as {method.name}")
        return method


def serving_model(method):
    """The torch model that scored the last period (ReLoop2 wraps its base method)."""
    base = getattr(method, "base", method)
    return base.serving_model() if hasattr(base, "serving_model") else None


class _RunLog:
    """compare.log in the output directory (INFO), warnings on the console through tqdm; restored on exit."""

    def __init__(self, path: Path, verbose: bool) -> None:
        self.path, self.verbose = path, verbose

    def __enter__(self) -> _RunLog:
        class TqdmHandler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                tqdm.write(self.format(record))

        self.logger = logging.getLogger("llm4rec")
        self.saved = (self.logger.level, self.logger.propagate)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(self.path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.console = TqdmHandler(logging.INFO if self.verbose else logging.WARNING)
        self.console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        for handler in (self.file, self.console):
            self.logger.addHandler(handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        for handler in (self.file, self.console):
            self.logger.removeHandler(handler)
        self.file.close()
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


def run_compare(
    config: ExperimentConfig, out: str | Path, progress: bool = True, verbose: bool = False
) -> CompareOutcome:
    """Run (or continue) the comparison into ``out``; returns every current result row."""
    import torch

    from llm4rec.compare.report import write_report
    from llm4rec.data.config import load_timeline
    from llm4rec.eval.protocol import run_protocol

    out = Path(out)
    started = time.perf_counter()
    from llm4rec.llm.commands import quiet_libraries

    quiet_libraries()  # one bar for the whole comparison: the libraries' per-file bars would break it up
    timeline = load_timeline(config.data)
    fingerprint = dataset_fingerprint(timeline)
    store = ResultStore(out)
    store.check_dataset(dataclasses.asdict(config.data), fingerprint)  # before anything is written or trained
    runs = plan(config, store, fingerprint)
    store.write_manifest(manifest(config, runs, fingerprint, out))
    periods = config.tested_periods
    total = sum(len(periods) for _ in runs)
    reused = sum(len(r.done) for r in runs)
    scored = 0
    llm, ctr = LlmSide(config, timeline, out, progress), CtrSide(config, timeline)
    default_threads = torch.get_num_threads()
    with _RunLog(out / LOG_FILE, verbose):
        log.info(
            "llm4rec %s compare: %d methods, %d (method, seed, period) results, %d already done, into %s",
            __version__, len(config.specs), total, reused, out,
        )  # fmt: skip
        bar = tqdm(total=total, initial=reused, unit="result", desc="compare", disable=not progress, smoothing=0.1)
        try:
            for run in runs:
                if len(run.done) == len(periods):
                    log.info(
                        "%s seed %d: all %d periods stored (%s), skipped",
                        run.spec.name,
                        run.seed,
                        len(periods),
                        run.key,
                    )
                    continue
                bar.set_postfix_str(f"{run.spec.name} seed {run.seed}")
                log.info(
                    "%s seed %d: running (key %s, %d periods stored)", run.spec.name, run.seed, run.key, len(run.done)
                )
                if run.spec.side == "reference":
                    from llm4rec.baselines.popularity import ItemPopularity
                    from llm4rec.compare.config import POPULARITY_SMOOTHING

                    method, fit_from = ItemPopularity(POPULARITY_SMOOTHING, name=run.spec.name), None
                elif run.spec.is_llm:
                    torch.set_num_threads(default_threads)
                    method, fit_from = llm.method(run.spec, run.seed), None
                else:
                    torch.set_num_threads(config.ctr_config.threads or default_threads)
                    method = ctr.method(run.spec, run.seed)
                    # Kept up to date from pre-training on; FR retrains from scratch each time, so it needs no
                    # burn-in (its first fit is the full retraining through the period before the first test).
                    fit_from = None if run.spec.method == "FR" else config.ctr_config.pretrain_periods - 1
                checkpoints: dict[str, str] = {}

                def save(row: ResultRow, samples, p, run=run, method=method, checkpoints=checkpoints) -> None:
                    nonlocal scored
                    model = None if run.spec.is_llm else serving_model(method)
                    store.save(run.dir, row, samples, p, model)
                    if run.spec.is_llm:
                        checkpoints[str(row.period)] = str(getattr(method, "path", "") or "")
                    write_json(
                        run.dir / "run.json",
                        {"method": run.spec.name, "seed": run.seed, "key": run.key,
                         "settings": config.method_settings(run.spec), "adapters": checkpoints},
                    )  # fmt: skip
                    scored += 1
                    bar.update(1)

                run_protocol(
                    method, timeline, config.first_test_period, config.last_test_period, run.seed, progress=False,
                    max_test_samples=config.test_samples, fit_from=fit_from, reuse=run.done, on_result=save,
                )  # fmt: skip
        except KeyboardInterrupt:
            log.warning("interrupted: the finished results are kept in %s; run the same command to continue", out)
            raise
        finally:
            bar.close()
            torch.set_num_threads(default_threads)
        rows = store.rows()
        write_report(out)
        seconds = time.perf_counter() - started
        log.info("done in %.1f s: %d results computed, %d reused", seconds, scored, reused)
    return CompareOutcome(rows=rows, seconds=seconds, scored=scored, reused=reused)
