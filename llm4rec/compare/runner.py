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
import json
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
from llm4rec.run_lock import RunLock

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


def prepare_llm_side(config: ExperimentConfig, timeline, progress: bool) -> None:
    """Before anything trains: the LLM side's template loads, its backbone is there (fetched or built on a first
    run), and the backbone's identity (its files, not its path) goes into every LLM method's key."""
    from accelerate import PartialState

    from llm4rec.llm.backbone_identity import backbone_identity
    from llm4rec.llm.prompts import load_template, template_for_dataset
    from llm4rec.llm.session import ensure_backbone

    lsat = config.lsat
    template = load_template(lsat.template or template_for_dataset(lsat.data.name))
    ensure_backbone(lsat, timeline, template, PartialState(), progress)
    config.backbone_identity = backbone_identity(lsat.backbone)


def manifest(config: ExperimentConfig, runs: list[PlannedRun], fingerprint: str, root: Path) -> dict:
    return {
        "llm4rec": __version__,
        "dataset": {"data": dataclasses.asdict(config.data), "fingerprint": fingerprint},
        "tested_periods": config.tested_periods,
        "test_samples": config.test_samples,
        "methods": [s.name for s in config.specs],
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
    """One LoRA session per seed, opened on first use (a finished comparison never loads the backbone); each
    method built by its catalogue entry."""

    def __init__(self, config: ExperimentConfig, timeline, out: Path, progress: bool) -> None:
        self.config, self.timeline, self.out, self.progress = config, timeline, out, progress
        self.seeds: dict[int, tuple] = {}  # seed -> (its LsatConfig, its LoRA session)

    def method(self, spec: MethodSpec, seed: int):
        from llm4rec.llm.catalogue import build_method, session_view
        from llm4rec.llm.session import open_session

        if seed not in self.seeds:
            lsat = self.config.lsat_for_seed(seed, str(self.out / "llm" / f"seed_{seed}"))
            started = time.perf_counter()
            log.info("LLM seed %d: opening the backbone %s", seed, lsat.backbone.model_name_or_path)
            # A first run builds the scratch backbone (minutes): that gets its own bar; the fits report to the log.
            session = open_session(session_view(lsat), self.timeline, progress=False, build_progress=self.progress)
            self.seeds[seed] = (lsat, session)
            log.info("LLM seed %d: backbone ready in %.1f s", seed, time.perf_counter() - started)
        lsat, session = self.seeds[seed]
        method = build_method(spec.entry, session, lsat)
        method.name = spec.name
        return method


class CtrSide:
    def __init__(self, config: ExperimentConfig, timeline) -> None:
        self.config, self.timeline = config, timeline
        self.features = None

    def method(self, spec: MethodSpec, seed: int):
        from llm4rec.ctr.catalogue import build_method
        from llm4rec.ctr.updates import timeline_features

        if self.features is None:
            features = self.config.ctr_config.features
            self.features = timeline_features(self.timeline, self.config.data.label_threshold, features)
        method = build_method(spec.entry, spec.model, self.features, self.config.ctr_config_of(spec), seed)
        if method.name != spec.name:  # the catalogue's naming and ours must agree, or results land under two names
            raise Llm4recError(f"internal: {spec.name} was built as {method.name}")
        return method


def serving_model(method):
    """The torch model that scored the last period (ReLoop2 wraps its base method)."""
    base = getattr(method, "base", method)
    return base.serving_model() if hasattr(base, "serving_model") else None


class Sides:
    """Builds the period method of a planned run, with the torch threads its side runs best on."""

    def __init__(self, config: ExperimentConfig, timeline, out: Path, progress: bool) -> None:
        import torch

        self.config = config
        self.llm, self.ctr = LlmSide(config, timeline, out, progress), CtrSide(config, timeline)
        self.default_threads = torch.get_num_threads()

    def method(self, spec: MethodSpec, seed: int):
        """(the period method, its first fitted period or None for the period before the first test)."""
        import torch

        if spec.side == "reference":
            from llm4rec.baselines.popularity import ItemPopularity
            from llm4rec.compare.methods import POPULARITY_SMOOTHING

            return ItemPopularity(POPULARITY_SMOOTHING, name=spec.name), None
        if spec.is_llm:
            torch.set_num_threads(self.default_threads)
            return self.llm.method(spec, seed), None
        ctr = self.config.ctr_config
        torch.set_num_threads(ctr.threads or self.default_threads)
        # Kept up to date from pre-training on; a method that starts afresh every fit (FR) needs no burn-in
        # (its first fit is the full retraining through the period before the first test).
        return self.ctr.method(spec, seed), (ctr.pretrain_periods - 1 if spec.entry.needs_burn_in else None)

    def restore_threads(self) -> None:
        import torch

        torch.set_num_threads(self.default_threads)


class ProgressBar:
    """One bar over every (method, seed, tested period), with an ETA that knows an LLM period costs far more
    than a CTR one: remaining periods of each side times that side's mean time per period so far (a prior
    until the side has run: 45 s for an LLM period, 2 s for a CTR period, on the 2-core CPU of README.md).
    tqdm's own ETA averages over all results and read 2.5 hours for an 18-minute run."""

    PRIOR_SECONDS = {"llm": 45.0, "ctr": 2.0, "reference": 0.1}

    def __init__(self, runs: list[PlannedRun], n_periods: int, enabled: bool) -> None:
        self.left = {side: 0 for side in self.PRIOR_SECONDS}
        for run in runs:
            self.left[run.spec.side] += n_periods - len(run.done)
        self.spent = {side: [0.0, 0] for side in self.PRIOR_SECONDS}  # seconds, periods
        self.current = ""
        done = sum(len(r.done) for r in runs)
        self.bar = tqdm(
            total=len(runs) * n_periods, initial=done, unit="result", desc="compare", disable=not enabled,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )  # fmt: skip
        self.last = time.perf_counter()

    def start(self, name: str, seed: int) -> None:
        self.current = f"{name} seed {seed}"
        self.last = time.perf_counter()
        self._show()

    def clock_from_now(self) -> None:
        """Not counting what came before (a backbone's one-time build) in the time per period."""
        self.last = time.perf_counter()

    def done(self, side: str) -> None:
        now = time.perf_counter()
        self.spent[side][0] += now - self.last
        self.spent[side][1] += 1
        self.left[side] -= 1
        self.last = now
        self.bar.update(1)
        self._show()

    def eta(self) -> float:
        return sum(
            left * (self.spent[side][0] / self.spent[side][1] if self.spent[side][1] else self.PRIOR_SECONDS[side])
            for side, left in self.left.items()
        )

    def _show(self) -> None:
        minutes, seconds = divmod(int(self.eta()), 60)
        self.bar.set_postfix_str(f"~{minutes}:{seconds:02d} left, {self.current}")

    def close(self) -> None:
        self.bar.close()


class RunSaver:
    """``on_result`` of one run: writes each scored period (and the run's record) before the next one starts."""

    def __init__(self, store: ResultStore, run: PlannedRun, method, settings: dict, bar) -> None:
        self.store, self.run, self.method, self.bar = store, run, method, bar
        record = run.dir / "run.json"
        earlier = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
        self.record = {
            "method": run.spec.name,
            "seed": run.seed,
            "key": run.key,
            "settings": settings,
            "adapters": earlier.get("adapters", {}) if earlier.get("key") == run.key else {},
            "fits": earlier.get("fits", {}) if earlier.get("key") == run.key else {},
        }
        self.scored = 0

    def __call__(self, row: ResultRow, samples, p) -> None:
        llm = self.run.spec.is_llm
        self.store.save(self.run.dir, row, samples, p, None if llm else serving_model(self.method))
        if llm:  # the adapter (or ensemble manifest) that scored this period: `llm4rec predict --adapter` loads it
            self.record["adapters"][str(row.period)] = str(getattr(self.method, "path", "") or "")
            fits = getattr(getattr(self.method, "base", self.method), "fit_records", None)
            if fits is not None:  # the samples each serving adapter's fit learnt (new and replayed)
                self.record.setdefault("fits", {})[str(row.period)] = fits()
        write_json(self.run.dir / "run.json", self.record)
        self.scored += 1
        self.bar.done(self.run.spec.side)


class _RunLog:
    """compare.log in the output directory (INFO), warnings on the console written through tqdm (tqdm's
    ``logging_redirect_tqdm``, so log lines do not break the progress bar); restored on exit."""

    def __init__(self, path: Path, verbose: bool) -> None:
        self.path, self.verbose = path, verbose

    def __enter__(self) -> _RunLog:
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.logger = logging.getLogger("llm4rec")
        self.saved = (self.logger.level, self.logger.propagate)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(self.path, encoding="utf-8")
        self.file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.console = logging.StreamHandler()
        self.console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        for handler in (self.file, self.console):
            self.logger.addHandler(handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.redirect = logging_redirect_tqdm(loggers=[self.logger])
        self.redirect.__enter__()  # the console handler is replaced by one that writes through tqdm
        for handler in self.logger.handlers:
            if handler is not self.file:
                handler.setLevel(logging.INFO if self.verbose else logging.WARNING)
        return self

    def __exit__(self, *exc) -> None:
        self.redirect.__exit__(*exc)
        for handler in (self.file, self.console):
            self.logger.removeHandler(handler)
        self.file.close()
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


def run_compare(
    config: ExperimentConfig, out: str | Path, progress: bool = True, verbose: bool = False
) -> CompareOutcome:
    """Run (or continue) the comparison into ``out`` (refused while another run writes there); returns every
    current result row."""
    from llm4rec.command_options import quiet_libraries
    from llm4rec.data.config import load_timeline

    out = Path(out)
    started = time.perf_counter()
    quiet_libraries()  # one bar for the whole comparison: the libraries' per-file bars would break it up
    timeline = load_timeline(config.data)
    fingerprint = dataset_fingerprint(timeline)
    store = ResultStore(out)
    store.check_dataset(dataclasses.asdict(config.data), fingerprint)  # before anything is written or trained
    with RunLock(out, "llm4rec compare"):
        return _run_compare(config, out, store, timeline, fingerprint, started, progress, verbose)


def _run_compare(config, out: Path, store, timeline, fingerprint: str, started: float, progress: bool,
                 verbose: bool) -> CompareOutcome:  # fmt: skip
    from llm4rec.compare.report import write_report
    from llm4rec.eval.protocol import run_protocol

    if config.lsat is not None:
        prepare_llm_side(config, timeline, progress)
    runs = plan(config, store, fingerprint)
    store.write_manifest(manifest(config, runs, fingerprint, out))
    periods = config.tested_periods
    total = len(runs) * len(periods)
    reused = sum(len(r.done) for r in runs)
    scored = 0
    sides = Sides(config, timeline, out, progress)
    with _RunLog(out / LOG_FILE, verbose):
        log.info(
            "llm4rec %s compare: %d methods, %d (method, seed, period) results, %d already done, into %s",
            __version__, len(config.specs), total, reused, out,
        )  # fmt: skip
        bar = ProgressBar(runs, len(periods), progress)
        try:
            for run in runs:
                name, seed = run.spec.name, run.seed
                if len(run.done) == len(periods):
                    log.info("%s seed %d: all %d periods stored (%s), skipped", name, seed, len(periods), run.key)
                    continue
                bar.start(name, seed)
                log.info("%s seed %d: running (key %s, %d periods stored)", name, seed, run.key, len(run.done))
                method, fit_from = sides.method(run.spec, seed)
                bar.clock_from_now()
                saver = RunSaver(store, run, method, config.method_settings(run.spec), bar)
                try:
                    run_protocol(
                        method, timeline, config.first_test_period, config.last_test_period, seed, progress=False,
                        max_test_samples=config.test_samples, fit_from=fit_from, reuse=run.done, on_result=saver,
                    )  # fmt: skip
                finally:
                    scored += saver.scored
        except KeyboardInterrupt:
            log.warning("interrupted: the finished results are kept in %s; run the same command to continue", out)
            raise
        finally:
            bar.close()
            sides.restore_threads()
        rows = store.rows()
        write_report(out)
        seconds = time.perf_counter() - started
        log.info("done in %.1f s: %d results computed, %d reused", seconds, scored, reused)
    return CompareOutcome(rows=rows, seconds=seconds, scored=scored, reused=reused)
