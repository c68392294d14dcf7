"""One backbone in memory with the LoRA adapters of a run: opening it, training adapters, scoring them.

FR, FT and every LSAT variant share one :class:`LoraSession` (opened by
:func:`open_session`, which fetches or builds the backbone on a first run), so
the base model is loaded once; adapters come and go by name inside one
PeftModel (:class:`~llm4rec.llm.adapter_slots.AdapterSlots`). Training
produces an adapter directory in the :class:`AdapterStore` (or reuses one
with the same recipe), and scoring remembers the answer margins of
(adapter, rows) pairs it has computed: the LSAT ensemble reuses the long-
and short-term adapters' scores instead of recomputing them. Which rows a
fit learns from is the timeline's rule (:meth:`Timeline.training_positions`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.periods import Timeline
from llm4rec.llm.adapter_slots import AdapterSlots
from llm4rec.llm.adapter_store import AdapterStore, recipe_key, stored_key
from llm4rec.llm.backbone import Backbone
from llm4rec.llm.prompts import PromptTemplate
from llm4rec.llm.train import LoraSettings, LoraTrainConfig, TrainResult

log = logging.getLogger(__name__)


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
        train: LoraTrainConfig,
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
        self.slots = AdapterSlots(backbone, store)
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

    # --- samples ---------------------------------------------------------------------------------------------
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
        train = self.train_settings(max_train_samples, max_val_samples, train_changes)
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

    def _train_and_save(self, path, key, train_rows, val_rows, train: LoraTrainConfig, description, start_from) -> None:
        import torch

        from llm4rec.llm.adapters import load_adapter, save_adapter
        from llm4rec.llm.train import attach_lora

        name = self.slots.name(path, key)
        torch.manual_seed(train.seed)  # LoRA's A matrices start random: same recipe, same adapter
        if start_from is None:
            self.model = attach_lora(self.model, self.lora, name)
        else:
            self.model = load_adapter(self.backbone, start_from, name, is_trainable=True)
        summary = self.fit_active(name, train_rows, val_rows, train, description, keep_start=start_from is not None)
        self.slots.attached(name, path)
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

    def fit_active(
        self, name: str, train_rows, val_rows, train: LoraTrainConfig, description: dict, keep_start: bool
    ) -> dict:
        """Train the model's active adapter ``name`` (and any other trainable parameter the model holds, such as
        SD-LoRA's magnitudes) on ``train_rows``, early-stopped on ``val_rows``: :func:`train_lora`, the one
        training loop. ``keep_start``: the starting state is a candidate. Returns the fit's summary."""
        from llm4rec.llm.train import train_lora

        started = time.perf_counter()
        train_set, val_set = self.samples(train_rows), self.samples(val_rows)
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
            keep_start=keep_start,
            fit_name=f"{name} ({role})",
            answer_tokens=self.backbone.answer_tokens,
        )
        if self.accelerator is not None:
            self.model = self.accelerator.unwrap_model(self.model)
            self.accelerator.free_memory()  # drop accelerate's references to this fit's optimizer and scheduler
        self.model.eval()
        return {**result.summary(), "seconds": round(time.perf_counter() - started, 1)}  # tokenizing included

    def train_settings(self, max_train_samples: int | None, max_val_samples: int | None, changes: dict | None = None):
        """The session's training settings with this fit's sample caps (and ``changes``)."""
        return replace(
            self.train_config, max_train_samples=max_train_samples, max_val_samples=max_val_samples, **(changes or {})
        )

    def load(self, path: Path) -> str:
        """Load the adapter at ``path`` (once) and return its name in the PeftModel."""
        return self.slots.load(path, self.stored_recipe(path))

    # --- scoring ----------------------------------------------------------------------------------------------
    def margins(self, paths: list[Path], rows: pd.DataFrame, passes: str = "one") -> np.ndarray:
        """[len(paths), len(rows)] answer margins (logit Yes - logit No) of each adapter on ``rows``.

        Margins already computed for an (adapter, rows) pair are reused; the missing adapters are scored
        together, in one mixed-adapter pass by default.
        """
        from llm4rec.llm.score import score_margins

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

    def margins_and_hidden(self, paths: list[Path], rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`margins` of ``paths`` (distinct) on ``rows`` with each adapter's final hidden state at every
        scored position, from one forward pass: ([len(paths), n], [len(paths), n, H]). The margins join the cache."""
        from llm4rec.llm.score import score_margins_and_hidden

        if len(set(map(str, paths))) != len(paths):
            raise ValueError(f"internal: margins_and_hidden needs distinct adapters, got {paths}")
        names = [self.load(p) for p in paths]
        margins, hidden = score_margins_and_hidden(
            self.model, self.samples(rows)["input_ids"], self.backbone.answer_ids,
            self.backbone.tokenizer.pad_token_id, names, self.score_batch_size, progress=self.progress,
        )  # fmt: skip
        key = rows_key(rows)
        for path, margin in zip(paths, margins, strict=True):
            self.margin_cache[(str(path), key)] = margin
        return margins, hidden

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


def ensure_backbone(config, timeline, template, accelerator, progress: bool) -> None:
    """Fetch (``fetch_backbone``) or build (``build_backbone``) the backbone named by the config when its directory
    does not exist yet; refuse a scratch backbone pre-trained on a tested period."""
    from llm4rec.llm.scratch import check_backbone_directory

    if not config.backbone.model_name_or_path:  # a GGUF file alone
        return
    path = Path(config.backbone.model_name_or_path)
    if path.is_dir():
        check_backbone_directory(path, config.data.name, config.first_test_period)
    fetch, build = getattr(config, "fetch_backbone", None), getattr(config, "build_backbone", None)
    if path.exists() or (build is None and fetch is None):
        return
    if fetch is not None:
        if accelerator.is_main_process:
            from llm4rec.llm.fetch import fetch_backbone

            log.info("fetching %s into %s (first run only)", fetch, path)
            fetch_backbone(fetch, path, progress)
        accelerator.wait_for_everyone()
        return
    if accelerator.is_main_process:
        from llm4rec.llm.scratch import build_scratch_backbone

        log.info("building %s at %s (first run only)", build.preset, path)
        build_scratch_backbone(
            timeline, template, str(path), build.preset, build.periods, build.seed, config.cutoff, progress,
            max_samples=build.max_samples, epochs=build.epochs,
        )  # fmt: skip
    accelerator.wait_for_everyone()


def open_session(config, timeline, progress: bool = True, build_progress: bool | None = None) -> LoraSession:
    """The backbone (built first when the config says so) in a LoRA session whose adapters live in ``config.out``.

    ``build_progress``: a progress bar for the backbone's build (default: ``progress``).
    """
    from accelerate import Accelerator

    from llm4rec.llm.backbone import load_backbone
    from llm4rec.llm.prompts import load_template, template_for_dataset

    accelerator = Accelerator(mixed_precision=config.train.mixed_precision)  # train_lora accumulates gradients
    template = load_template(config.template or template_for_dataset(config.data.name))
    ensure_backbone(config, timeline, template, accelerator, progress if build_progress is None else build_progress)
    backbone = load_backbone(config.backbone, template, accelerator.device)
    return LoraSession(
        backbone, template, timeline, AdapterStore(Path(config.out) / "adapters"), config.lora, config.train,
        data_recipe=asdict(config.data), cutoff=config.cutoff, score_batch_size=config.score_batch_size,
        accelerator=accelerator, progress=progress,
    )  # fmt: skip
