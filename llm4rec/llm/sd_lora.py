"""SD-LoRA (Wu et al., ICLR 2025): continual LoRA over periods as frozen unit directions with learnt magnitudes.

Each period is a task. The LoRA learnt on an earlier period i is kept, frozen, as a **direction**: its update
``dW_i = s_i B_i A_i`` normalised to unit Frobenius norm in every adapted module. Every direction has one learnable
**magnitude** ``alpha_i`` (a scalar shared by all modules), and at period t a new LoRA ``(A_t, B_t)`` is trained
together with all magnitudes ``alpha_1..alpha_t``::

    W = W_0 + sum_i alpha_i * dW_i / ||dW_i||_F        (per module)

The new period's term is normalised while it trains too, so the model that trains, the one validation selects
and the one that serves are the same function. Its B starts at zero (peft's LoRA init): the normalised term is
then 0 (``0 / max(0, tiny)``) and the fit starts exactly from the previous period's model; its magnitude starts at
``sd_lora.initial_magnitude`` (0.8, the authors' code). Earlier magnitudes start from their learnt values. The last
model serves; there is no task selection at inference.

Variants (the paper's scalable ones):

- ``SD-LoRA-RR``: ranks reduced for later periods (``sd_lora.rank_schedule``: the k-th direction's rank, the last
  value repeating).
- ``SD-LoRA-KD``: after period t trains, its direction is compared with the span of the earlier ones by least
  squares over all modules at once (one coefficient per earlier direction, as the magnitudes are); when the part
  outside the span is below ``sd_lora.kd_threshold`` of its norm, ``alpha_i += alpha_t * c_i`` and the new
  direction is dropped instead of kept. The folded model approximates the trained one to that residual.

What is peft's and what is ours: directions are named peft adapters (loaded, frozen, active together with the new
one through peft's multi-adapter ``set_adapter``); training is :func:`llm4rec.llm.train.train_lora`, the one loop.
peft has no learnable per-adapter scale, so :class:`Magnitudes` (forward hooks that scale each direction's
``lora_B`` output) is written here, and so is :func:`fold`: an exact construction of one normal peft adapter whose
delta is the sum above (A blocks stacked, B blocks scaled per module, rank ``sum r_i``, scaling 1) -- peft's
``cat`` combination takes one weight per adapter, and the normalisation is per module.

On disk (``OUT/adapters/``): ``sd_lora/<method>/directions/period_<i>/`` is the LoRA trained at period i (a normal
peft adapter), ``sd_lora/<method>/period_<t>/`` the served adapter after period t, whose ``llm4rec.json`` records the
periods, magnitudes, ranks and source directions (``llm4rec predict --adapter`` loads it as any adapter).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from llm4rec.errors import ConfigError, Llm4recError
from llm4rec.llm.lsat import AdapterMethod

log = logging.getLogger(__name__)

MAGNITUDES_MODULE = "sd_lora_magnitudes"
SERVED = "sd_lora_served"  # the folded adapter's name while it is saved
TINY_NORM = 1e-12  # below it a direction is 0 (a new LoRA at B = 0): the normalised term is 0, not NaN
VARIANTS = ("SD-LoRA", "SD-LoRA-RR", "SD-LoRA-KD")


# --- directions, one module at a time ------------------------------------------------------------------------------
def lora_layers(model, adapter: str) -> list[tuple[str, torch.nn.Module]]:
    """(module name, peft LoRA layer) of every module ``adapter`` adapts, in model order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if hasattr(module, "lora_A") and hasattr(module, "scaling") and adapter in module.lora_A
    ]


def module_delta(layer, adapter: str) -> torch.Tensor:
    """``s B A`` of ``adapter`` in one layer (fp32, [out, in])."""
    a, b = layer.lora_A[adapter].weight.float(), layer.lora_B[adapter].weight.float()
    return layer.scaling[adapter] * (b @ a)


def delta_inner(layer, first: str, second: str) -> torch.Tensor:
    """``<s_1 B_1 A_1, s_2 B_2 A_2>_F`` from the factors alone: ``s_1 s_2 sum((B_1^T B_2) * (A_1 A_2^T))``, r x r
    products instead of [out, in] matrices (differentiable; the norm of a direction is its square root)."""
    a1, b1 = layer.lora_A[first].weight.float(), layer.lora_B[first].weight.float()
    a2, b2 = layer.lora_A[second].weight.float(), layer.lora_B[second].weight.float()
    return layer.scaling[first] * layer.scaling[second] * ((b1.T @ b2) * (a1 @ a2.T)).sum()


def delta_norm(layer, adapter: str) -> torch.Tensor:
    """``||s B A||_F``, at least :data:`TINY_NORM`: at B = 0 the norm's gradient would be 0 * inf = NaN, so below
    it the square root is taken of the floor instead (no gradient flows through the norm there)."""
    square = delta_inner(layer, adapter, adapter)
    floor = torch.full_like(square, TINY_NORM**2)
    return torch.where(square > floor, square, floor).sqrt()


class Magnitudes(torch.nn.Module):
    """One learnable magnitude per direction (``names``, in period order), applied by forward hooks on each LoRA
    layer's ``lora_B``: the direction's output is scaled by ``alpha_i / ||s_i B_i A_i||_F`` (peft multiplies by
    ``s_i`` after), so the module adds ``alpha_i dW_i / ||dW_i||_F``. The norm is computed in every forward from
    the factors (cheap), so the trainable direction stays normalised as it learns. Ours: peft has no such scale."""

    def __init__(self, model, names: list[str], values: list[float]) -> None:
        super().__init__()
        if len(names) != len(values):
            raise ValueError(f"internal: {len(names)} directions but {len(values)} magnitudes")
        self.names = list(names)
        self.magnitudes = torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))
        self._handles = []
        for index, name in enumerate(self.names):
            for _, layer in lora_layers(model, name):
                self._handles.append(layer.lora_B[name].register_forward_hook(self._hook(layer, name, index)))

    def _hook(self, layer, name: str, index: int):
        def scale(module, inputs, output):
            factor = self.magnitudes[index] / delta_norm(layer, name)
            return output * factor.to(output.dtype)

        return scale

    def values(self) -> list[float]:
        return [float(v) for v in self.magnitudes.detach().cpu()]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


# --- folding into one servable adapter -----------------------------------------------------------------------------
@torch.no_grad()
def fold(model, names: list[str], magnitudes: list[float], folded: str) -> str:
    """Add adapter ``folded`` (a normal LoRA) whose delta in every module is exactly
    ``sum_i magnitudes[i] * dW_i / ||dW_i||_F`` over adapters ``names``; make it active. An adapter already called
    ``folded`` is replaced."""
    configs = [model.peft_config[name] for name in names]
    modules = {frozenset(c.target_modules) for c in configs}
    if len(modules) != 1:
        raise ConfigError(f"SD-LoRA: directions {names} adapt different modules; they cannot be folded into one")
    rank = sum(c.r for c in configs)
    if folded in model.peft_config:
        if model.active_adapter == folded:
            model.set_adapter(names[0])
        model.delete_adapter(folded)
    config = dataclasses.replace(
        configs[0], r=rank, lora_alpha=rank, lora_dropout=0.0, rank_pattern={}, alpha_pattern={}, use_rslora=False
    )
    model.add_adapter(folded, config)
    for _, layer in lora_layers(model, folded):
        blocks_a, blocks_b = [], []
        for name, alpha in zip(names, magnitudes, strict=True):
            norm = float(delta_norm(layer, name))
            factor = 0.0 if norm <= TINY_NORM else alpha * layer.scaling[name] / norm
            blocks_a.append(layer.lora_A[name].weight.float())
            blocks_b.append(layer.lora_B[name].weight.float() * factor)
        target_a, target_b = layer.lora_A[folded].weight, layer.lora_B[folded].weight
        target_a.copy_(torch.cat(blocks_a, dim=0).to(target_a.dtype))
        target_b.copy_(torch.cat(blocks_b, dim=1).to(target_b.dtype))
        if layer.scaling[folded] != 1.0:
            raise RuntimeError(f"internal: the folded adapter's scaling is {layer.scaling[folded]}, expected 1")
    model.set_adapter(folded)
    for name, parameter in model.named_parameters():  # a served adapter is for inference
        if f".{folded}." in name:
            parameter.requires_grad_(False)
    return folded


@torch.no_grad()
def is_zero(model, adapter: str) -> bool:
    """Whether ``adapter``'s delta is 0 in every module (a new LoRA still at B = 0)."""
    return all(float(delta_norm(layer, adapter)) <= TINY_NORM for _, layer in lora_layers(model, adapter))


# --- KD: is a new direction in the span of the earlier ones? -------------------------------------------------------
@torch.no_grad()
def span_coefficients(model, earlier: list[str], new: str) -> tuple[list[float], float]:
    """Least squares over all modules at once: ``c = argmin || D_new - sum_i c_i D_i ||`` with each ``D`` the
    concatenation of a direction's unit-norm module deltas. Returns ``c`` and the residual's share of
    ``||D_new||`` (0: exactly in the span; 1: orthogonal to it). Inner products from the factors
    (:func:`delta_inner`), no [out, in] matrix is formed."""
    names = [*earlier, new]
    k = len(names)
    gram = torch.zeros(k, k, dtype=torch.float64)
    for _, layer in lora_layers(model, new):
        norms = [float(delta_norm(layer, n)) for n in names]
        for i in range(k):
            for j in range(i, k):
                if norms[i] <= TINY_NORM or norms[j] <= TINY_NORM:
                    continue
                value = float(delta_inner(layer, names[i], names[j])) / (norms[i] * norms[j])
                gram[i, j] += value
                gram[j, i] = gram[i, j]
    old, cross, own = gram[:-1, :-1], gram[:-1, -1], gram[-1, -1]
    if not earlier or own <= 0:
        return [0.0] * len(earlier), 1.0
    c = torch.linalg.lstsq(old, cross.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    residual = own - 2 * c @ cross + c @ old @ c
    return [float(x) for x in c], float(residual.clamp_min(0.0).sqrt() / own.sqrt())


# --- the period method ---------------------------------------------------------------------------------------------
def rank_of(direction_index: int, lora_rank: int, schedule: list[int] | None) -> int:
    """The rank of the ``direction_index``-th direction (0-based): ``lora.r``, or the RR schedule's (the last value
    repeating)."""
    if not schedule:
        return lora_rank
    return schedule[min(direction_index, len(schedule) - 1)]


def read_manifest(path: Path, backbone) -> dict:
    """The ``sd_lora`` record of a served SD-LoRA adapter; an adapter of another base or without one: an error."""
    from llm4rec.llm.adapters import check_adapter_fits, read_adapter_meta

    meta = read_adapter_meta(path)
    check_adapter_fits(meta, backbone, path)
    record = meta.get("sd_lora")
    if not isinstance(record, dict) or not record.get("directions"):
        raise ConfigError(
            f"sd_lora.start_from: {path} is not an SD-LoRA adapter (its llm4rec.json has no sd_lora record of "
            "directions and magnitudes); give the served adapter directory of an SD-LoRA run"
        )
    return record


class SdLoraAdapters:
    """The served SD-LoRA adapter after each period of one variant, trained period by period and stored."""

    def __init__(self, session, config, variant: str) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"internal: SD-LoRA variant {variant!r}")
        self.session, self.config, self.variant = session, config, variant
        self.root = Path(session.store.root) / "sd_lora" / variant.lower()
        self.records: dict[int, dict] = {}  # period -> what its fit did (magnitudes, KD residual)

    @property
    def base_period(self) -> int:
        """The first task: periods 0..first_test_period - 2 in one fit (as FT starts from FR through there)."""
        return self.config.first_test_period - 2

    def settings(self) -> dict:
        s = self.config.sd_lora
        own = {"initial_magnitude": s.initial_magnitude}
        if self.variant == "SD-LoRA-RR":
            own["rank_schedule"] = list(s.rank_schedule)
        if self.variant == "SD-LoRA-KD":
            own["kd_threshold"] = s.kd_threshold
        return own

    def served(self, period: int) -> Path:
        """The served adapter after period ``period`` (trained through it, stored; reused when its recipe is)."""
        session, limits = self.session, self.config.samples
        start = self.config.sd_lora.start_from
        if period == self.base_period and start is not None:
            read_manifest(Path(start), session.backbone)  # checked before anything trains
        previous = None
        if period > self.base_period or start is not None:
            previous = self.served(period - 1) if period > self.base_period else Path(start)
        history = previous is None
        train_rows = session.timeline.training_rows(0 if history else period, period)
        val_rows = session.timeline.period(period, "val")
        train = session.train_settings(limits.history_fit if history else limits.recent_fit, limits.val)
        from llm4rec.llm.session import rows_key

        key = session.recipe(
            method=self.variant, sd_lora=self.settings(), train=dataclasses.asdict(train),
            train_rows=rows_key(train_rows), val_rows=rows_key(val_rows),
            start_from=None if previous is None else session.stored_recipe(previous),
        )  # fmt: skip
        path = self.root / f"period_{period}"
        if session.store.find(key, path) is not None:
            return path
        self._train(period, path, key, previous, train_rows, val_rows, train)
        return path

    def _train(self, period, path, key, previous, train_rows, val_rows, train) -> None:
        from llm4rec.llm.adapters import save_adapter
        from llm4rec.llm.train import attach_lora

        session, settings = self.session, self.config.sd_lora
        earlier = read_manifest(previous, session.backbone) if previous is not None else {"directions": [],
                                                                                           "magnitudes": []}  # fmt: skip
        directions = [Path(d) for d in earlier["directions"]]
        names = [session.load(d) for d in directions]
        rank = rank_of(
            len(directions), session.lora.r, settings.rank_schedule if self.variant == "SD-LoRA-RR" else None
        )
        new_path = self.root / "directions" / f"period_{period}"
        new = session.slots.name(new_path, key)
        torch.manual_seed(train.seed)
        session.model = attach_lora(session.model, dataclasses.replace(session.lora, r=rank), new)
        model = session.model
        model.base_model.set_adapter([*names, new])  # all active; then the earlier directions frozen
        for name, parameter in model.named_parameters():
            if any(f".{d}." in name for d in names):
                parameter.requires_grad_(False)
        magnitudes = Magnitudes(model, [*names, new], [*earlier["magnitudes"], settings.initial_magnitude])
        model.add_module(MAGNITUDES_MODULE, magnitudes)
        description = {"role": f"sd_lora/{self.variant}", "period": period,
                       "periods": list(range(period + 1)) if previous is None else [period]}  # fmt: skip
        try:
            summary = session.fit_active(new, train_rows, val_rows, train, description, keep_start=previous is not None)
        finally:
            magnitudes.remove()
            delattr(model, MAGNITUDES_MODULE)
            model.set_adapter(new)
        learnt = magnitudes.values()
        record = {"period": period, "rank": rank, "magnitudes": learnt, "training": summary}
        kept_magnitudes = learnt
        # A fit that kept its start (best step 0) leaves B = 0: the period adds no direction.
        kept = not is_zero(model, new)
        if not kept:
            kept_magnitudes = learnt[:-1]
            record["empty"] = True
        if self.variant == "SD-LoRA-KD" and names and kept:
            coefficients, residual = span_coefficients(model, names, new)
            kept = not residual < settings.kd_threshold
            record["kd"] = {"coefficients": coefficients, "residual": residual, "folded": not kept}
            if not kept:  # alpha_i += alpha_t c_i: the earlier directions carry the new one
                kept_magnitudes = [a + learnt[-1] * c for a, c in zip(learnt[:-1], coefficients, strict=True)]
                log.info("%s: period %d's direction lies in the span of the earlier ones (residual %.3f): folded",
                         self.variant, period, residual)  # fmt: skip
        kept_names = [*names, new] if kept else names
        if not kept_names:
            raise Llm4recError(
                f"{self.variant}: the first fit (period {period}) learnt nothing (B = 0); raise its samples"
            )
        manifest = {
            "variant": self.variant,
            "periods": [*earlier.get("periods", []), *([period] if kept else [])],
            "directions": [*map(str, directions), *([str(new_path)] if kept else [])],
            "magnitudes": kept_magnitudes,
            "ranks": [model.peft_config[n].r for n in kept_names],
            "this_period": record,
        }
        if kept and session.is_main:
            save_adapter(model, new_path, session.backbone, session.template, session.cutoff,
                         {"recipe_key": key, "kind": "lora-adapter", "sd_lora_direction": {"period": period},
                          "lora": {**dataclasses.asdict(session.lora), "r": rank}})  # fmt: skip
        fold(model, kept_names, kept_magnitudes, SERVED)
        if session.is_main:
            save_adapter(model, path, session.backbone, session.template, session.cutoff,
                         {"recipe_key": key, "period": period, "sd_lora": manifest})  # fmt: skip
        model.set_adapter(new)
        model.delete_adapter(SERVED)
        if kept:
            session.slots.attached(new, new_path)  # the next period loads it as a direction
        else:
            model.set_adapter(names[-1])
            model.delete_adapter(new)
        session.fits[str(path)] = {**description, **summary}
        session.wait()
        session.forget_margins(path)
        self.records[period] = record


class SdLoraMethod(AdapterMethod):
    """SD-LoRA, SD-LoRA-RR or SD-LoRA-KD as a period method: fit(t) trains through t; scored from the served
    adapter on disk (what ``llm4rec predict --adapter`` loads)."""

    def __init__(self, session, config, variant: str) -> None:
        super().__init__(SdLoraAdapters(session, config, variant))
        self.name = variant
        self.weights: dict[int, dict] = {}  # period -> the served model's magnitudes, periods, ranks, KD's test

    def prepare(self, period: int) -> None:
        from llm4rec.llm.adapters import read_adapter_meta

        self.path = self.adapters.served(period)
        manifest = read_adapter_meta(self.path)["sd_lora"]
        self.weights[period] = {key: manifest[key] for key in ("magnitudes", "periods", "ranks")}
        self.weights[period]["kd"] = manifest["this_period"].get("kd")
