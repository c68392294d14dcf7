"""A comparison's output directory: one file per finished (method, seed, tested period), written atomically.

::

    DIR/experiment.json                     the resolved config, the dataset it ran on, each run's key
    DIR/runs/<method>/seed_<s>-<key>/       one (method, seed) run; <key> hashes what produced it
        period_<t>.json                     the result row of tested period t (the shared schema)
        period_<t>.csv                      its predictions (the shared schema: user_id, item_id, label, p)
        model_through_<t-1>.safetensors     CTR: the model that scored period t (LLM runs: their adapters
                                            are in DIR/llm/seed_<s>/adapters, keyed by recipe)
    DIR/compare.log                         what every run did, appended to on each resume

A rerun with a changed setting of one method gets a new key for that method
only; its old directory stays on disk but is no longer read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.errors import Llm4recError, brief
from llm4rec.eval.report import write_predictions
from llm4rec.eval.results import ResultRow
from llm4rec.io import atomic_path, write_json

log = logging.getLogger(__name__)
MANIFEST = "experiment.json"


def dataset_fingerprint(timeline) -> str:
    """A hash of the samples every method sees: who, what, when, the label, the period and the split."""
    table = timeline.table
    columns = [c for c in ("user_id", "item_id", "timestamp", "label", "period", "split") if c in table.columns]
    hashed = pd.util.hash_pandas_object(table[columns], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


class ResultStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise Llm4recError(
                f"{path} is not valid JSON ({brief(error)}); it was not written by llm4rec compare: choose another "
                f"--out, or remove {path} to start the comparison there afresh"
            ) from None
        dataset = manifest.get("dataset", {}) if isinstance(manifest, dict) else None
        if not isinstance(dataset, dict) or not isinstance(dataset.get("data", {}), dict):
            raise Llm4recError(
                f"{path} does not hold an llm4rec compare manifest (a JSON object with a 'dataset' object): choose "
                f"another --out, or remove {path} to start the comparison there afresh"
            )
        return manifest

    def check_dataset(self, data: dict, fingerprint: str) -> None:
        """Refuse a directory holding results of another dataset (or of the same one cut differently)."""
        manifest = self.manifest()
        if manifest is None:
            if (self.root / "results.json").exists():
                raise Llm4recError(
                    f"--out {self.root} holds results.json of another command (no {MANIFEST}); "
                    "choose a new directory for the comparison"
                )
            return
        stored = manifest.get("dataset", {})
        if stored.get("data", {}).get("name") != data["name"]:
            raise Llm4recError(
                f"--out {self.root} holds results of dataset {stored.get('data', {}).get('name')!r}, and this "
                f"experiment runs on {data['name']!r}: choose another --out or remove {self.root}"
            )
        if stored.get("data") != data:
            changed = sorted(k for k in data if stored.get("data", {}).get(k) != data[k])
            raise Llm4recError(
                f"--out {self.root} holds results of {data['name']} with other data settings (changed: {changed}); "
                f"choose another --out or remove {self.root}"
            )
        if stored.get("fingerprint") != fingerprint:
            raise Llm4recError(
                f"--out {self.root} holds results of another copy of {data['name']} (its samples differ: "
                f"fingerprint {stored.get('fingerprint')} vs {fingerprint}); choose another --out or remove {self.root}"
            )

    def write_manifest(self, manifest: dict) -> None:
        write_json(self.root / MANIFEST, manifest)

    def run_dir(self, method: str, seed: int, key: str) -> Path:
        return self.root / "runs" / method / f"seed_{seed}-{key}"

    def finished(self, run_dir: Path, periods: list[int]) -> dict[int, ResultRow]:
        """The tested periods of a run already written (a file that does not read back is ignored, and logged)."""
        done = {}
        for period in periods:
            path = run_dir / f"period_{period}.json"
            if not path.exists():
                continue
            try:
                done[period] = ResultRow.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError, AttributeError) as error:  # not JSON, not UTF-8, not a result row
                log.warning("ignoring %s, which does not read back (%s): period %d runs again", path, error, period)
        return done

    def save(self, run_dir: Path, row: ResultRow, samples: pd.DataFrame, p: np.ndarray, model=None) -> None:
        """Predictions and the model first, the result last: a result file means its period is complete."""
        write_predictions(run_dir / f"period_{row.period}.csv", samples, p)
        if model is not None:
            from safetensors.torch import save_file

            state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
            with atomic_path(run_dir / f"model_through_{row.period - 1}.safetensors") as tmp:
                save_file(state, str(tmp))
        write_json(run_dir / f"period_{row.period}.json", row.to_dict())

    def rows(self, manifest: dict | None = None) -> list[ResultRow]:
        """The stored rows of the runs the manifest names (the current keys), in config order."""
        manifest = manifest or self.manifest()
        if manifest is None:
            raise Llm4recError(f"{self.root} has no {MANIFEST}: not the output of llm4rec compare")
        rows = []
        for run in manifest["runs"]:
            done = self.finished(self.root / run["dir"], manifest["tested_periods"])
            rows += [done[p] for p in sorted(done)]
        return rows
