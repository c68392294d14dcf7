"""One backbone in memory with the LoRA adapters of a run: which rows train, training, loading, scoring.

FR, FT and every LSAT variant share one :class:`LoraSession`, so the base
model is loaded once; adapters come and go by name inside one PeftModel.
Training produces an adapter directory in the :class:`AdapterStore` (or
reuses one with the same recipe), and scoring remembers the answer margins
of (adapter, rows) pairs it has computed: the LSAT ensemble reuses the
long- and short-term adapters' scores instead of recomputing them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.periods import Timeline
from llm4rec.llm.adapter_store import AdapterStore, recipe_key, stored_key
from llm4rec.llm.backbone import Backbone
from llm4rec.llm.prompts import PromptTemplate
from llm4rec.llm.train import LoraSettings, TrainConfig, TrainResult

log = logging.getLogger(__name__)
MAX_LOADED_ADAPTERS = 6  # older adapters are unloaded (they stay on disk)


def rows_key(rows: pd.DataFrame) -> str:
    return hashlib.sha1(np.ascontiguousarray(rows.index.to_numpy()).tobytes()).hexdigest()[:16]


class LoraSession:
    def __init__(
        self,
        backbone: Backbone,
        template: PromptTemplate,
        timeline: Timeline,
        store: AdapterStore,
        lora: LoraSettings,
        train: TrainConfig,
        data_recipe: dict,
        cutoff: int = 512,
        score_batch_size: int = 32,
        accelerator=None,
        progress: bool = True,
    ) -> None:
        self.backbone, self.template, self.timeline, self.store = backbone, template, timeline, store
        self.lora, self.train_config, self.cutoff = lora, train, cutoff
        self.score_batch_size, self.progress = score_batch_size, progress
        self.accelerator = accelerator
        self.loaded: OrderedDict[str, Path] = OrderedDict()  # adapter name -> directory, least recent first
        self.margin_cache: dict[tuple[str, str], np.ndarray] = {}
        self.fits: dict[str, dict] = {}  # adapter directory -> what its training did
        self.base_recipe = {
            "base": backbone.fingerprint,
            "template": asdict(template),
            "cutoff": cutoff,
            "data": data_recipe,
            "lora": asdict(lora),
        }

    @property
    def model(self):
        """The backbone's model: a PeftModel once the first adapter is attached (kept on the backbone, which
        ``load_adapter`` reads)."""
        return self.backbone.model

    @model.setter
    def model(self, model) -> None:
        self.backbone.model = model

    # --- which rows -------------------------------------------------------------------------------------------
    def rows(self, periods, split: str) -> pd.DataFrame:
        table = self.timeline.table
        return table[table["period"].isin(list(periods)) & (table["split"] == split)]

    def training_rows(self, first: int, last: int) -> pd.DataFrame:
        """Train splits of periods first..last plus the val splits of first..last-1 (already used for their own
        selection, so now just data); period ``last``'s val split is kept for early stopping."""
        table = self.timeline.table
        period, split = table["period"].to_numpy(), table["split"].to_numpy()
        keep = ((period >= first) & (period < last)) | ((period == last) & (split == "train"))
        return table[keep]

    def update_rows(self, period: int) -> pd.DataFrame:
        """What fine-tuning at ``period`` learns from: train_t plus val_{t-1} (no longer needed for selection)."""
        table = self.timeline.table
        period_of, split = table["period"].to_numpy(), table["split"].to_numpy()
        return table[((period_of == period) & (split == "train")) | ((period_of == period - 1) & (split == "val"))]

    def samples(self, rows: pd.DataFrame):
        from llm4rec.llm.samples import build_samples

        return build_samples(rows, self.timeline.items, self.template, self.backbone.tokenizer, self.cutoff)

    # --- adapters ---------------------------------------------------------------------------------------------
    def recipe(self, **parts) -> str:
        return recipe_key({**self.base_recipe, **parts})

    def ensure_trained(
        self,
        path: Path,
        train_rows: pd.DataFrame,
        val_rows: pd.DataFrame,
        max_train_samples: int | None,
        max_val_samples: int | None,
        description: dict,
        start_from: Path | None = None,
        train_changes: dict | None = None,
    ) -> Path:
        """The adapter at ``path``: reused when its recipe is stored already, else trained and saved.

        ``start_from`` continues training an existing adapter (fine-tuning); with ``eval_at_start`` it stays
        the candidate to beat, so an update that does not raise the val AUC leaves the old adapter in place.
        ``train_changes``: training settings of this fit only (e.g. its seed and epochs), part of the recipe.
        """
        train = replace(
            self.train_config, max_train_samples=max_train_samples, max_val_samples=max_val_samples,
            **(train_changes or {}),
        )  # fmt: skip
        key = self.recipe(
            train=asdict(train),
            train_rows=rows_key(train_rows),
            val_rows=rows_key(val_rows),
            start_from=None if start_from is None else self.stored_recipe(start_from),
        )
        found = self.store.find(key, path)
        if found is not None:
            log.info("reusing %s (same recipe)", found)
            return found
        self._train_and_save(path, key, train_rows, val_rows, train, description, start_from)
        return path

    def stored_recipe(self, path: Path) -> str:
        key = stored_key(path)
        if key is None:
            raise FileNotFoundError(f"{path}: no adapter with a recipe key")
        return key

    def _train_and_save(self, path, key, train_rows, val_rows, train: TrainConfig, description, start_from) -> None:
        import torch

        from llm4rec.llm.adapters import load_adapter, save_adapter
        from llm4rec.llm.train import attach_lora, train_lora

        name = self._name(path, key)
        started = time.perf_counter()
        train_set, val_set = self.samples(train_rows), self.samples(val_rows)
        torch.manual_seed(train.seed)  # LoRA's A matrices start random: same recipe, same adapter
        if start_from is None:
            self.model = attach_lora(self.model, self.lora, name)
        else:
            self.model = load_adapter(self.backbone, start_from, name, is_trainable=True)
        role = f"{description.get('role', 'adapter')} through period {description.get('period')}"
        n_train = min(len(train_set), train.max_train_samples or len(train_set))
        log.info("training %s on %d of %d samples (%s)", name, n_train, len(train_set), role)
        result: TrainResult = train_lora(
            self.model,
            self.backbone.tokenizer,
            self.backbone.answer_ids,
            train_set,
            val_set,
            train,
            self.accelerator,
            self.progress,
            keep_start=start_from is not None,
            fit_name=f"{name} ({role})",
            answer_tokens=self.backbone.answer_tokens,
        )
        if self.accelerator is not None:
            self.model = self.accelerator.unwrap_model(self.model)
            self.accelerator.free_memory()  # drop accelerate's references to this fit's optimizer and scheduler
        self.model.eval()
        self.loaded[name] = path
        summary = {
            "n_train": result.n_train,
            "n_val": result.n_val,
            "best_val_auc": result.best_val_auc,
            "best_step": result.best_step,
            "steps": result.steps,
            "kept_starting_adapter": result.kept_start,
            "seconds": round(time.perf_counter() - started, 1),
            "train_samples_per_second": round(result.train_samples_per_second, 2),
            "history": result.history,
        }
        self.fits[str(path)] = {**description, **summary}
        if self.is_main:
            save_adapter(
                self.model,
                path,
                self.backbone,
                self.template,
                self.cutoff,
                {"recipe_key": key, **description, "lora": asdict(self.lora), "training": summary},
            )
        self.wait()

    def load(self, path: Path) -> str:
        """Load the adapter at ``path`` (once) and return its name in the PeftModel."""
        from peft import PeftModel

        from llm4rec.llm.adapters import load_adapter

        name = self._name(path, self.stored_recipe(path))
        if isinstance(self.model, PeftModel) and name in self.model.peft_config:
            self.loaded[name] = path
            self.loaded.move_to_end(name)
            return name
        self.model = load_adapter(self.backbone, path, name)
        self.loaded[name] = path
        while len(self.loaded) > MAX_LOADED_ADAPTERS:
            self._unload(next(iter(self.loaded)))
        return name

    def _name(self, path: Path, key: str) -> str:
        """The peft adapter name of a store directory's adapter: its place and its recipe (peft names may not
        contain dots), so an adapter retrained under another recipe never collides with the old one."""
        relative = Path(path).resolve().relative_to(self.store.root.resolve())
        return "_".join(relative.parts).replace(".", "_").replace("-", "_") + "_" + key[:8]

    def _unload(self, name: str) -> None:
        from peft import PeftModel

        self.loaded.pop(name, None)
        if isinstance(self.model, PeftModel) and name in self.model.peft_config and len(self.model.peft_config) > 1:
            if self.model.active_adapter == name:
                self.model.set_adapter(next(n for n in self.model.peft_config if n != name))
            self.model.delete_adapter(name)

    # --- scoring ----------------------------------------------------------------------------------------------
    def margins(self, paths: list[Path], rows: pd.DataFrame, passes: str = "one") -> np.ndarray:
        """[len(paths), len(rows)] answer margins (logit Yes - logit No) of each adapter on ``rows``.

        Margins already computed for an (adapter, rows) pair are reused; the missing adapters are scored
        together, in one mixed-adapter pass by default.
        """
        from llm4rec.llm.ensemble import score_margins

        key = rows_key(rows)
        missing = [p for p in dict.fromkeys(paths) if (str(p), key) not in self.margin_cache]
        if missing:
            names = [self.load(p) for p in missing]
            samples = self.samples(rows)
            computed = score_margins(
                self.model,
                samples["input_ids"],
                self.backbone.answer_ids,
                self.backbone.tokenizer.pad_token_id,
                names,
                passes if len(names) > 1 else "two",
                self.score_batch_size,
                progress=self.progress,
            )
            for path, margin in zip(missing, computed, strict=True):
                self.margin_cache[(str(path), key)] = margin
        return np.stack([self.margin_cache[(str(p), key)] for p in paths])

    def forget_margins(self, path: Path) -> None:
        for cache_key in [k for k in self.margin_cache if k[0] == str(path)]:
            del self.margin_cache[cache_key]

    # --- processes --------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
