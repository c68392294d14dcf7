"""Task arithmetic: one LoRA adapter made from a long-term and a short-term adapter.

With weight ``w`` for the long-term adapter and ``1 - w`` for the short-term one:

- ``exact``: the merged delta is exactly ``w * dW_long + (1 - w) * dW_short``
  (dW = B @ A * scaling). peft's ``cat`` combination does this by stacking the
  two adapters' A and B (rank r_long + r_short), so no cross terms appear.
- ``lsat``: A and B are each interpolated, ``A = w A_long + (1 - w) A_short``
  and likewise B, as the LSAT authors' code does with the two state dicts.
  The product then holds cross terms (``w (1 - w) (B_long A_short + B_short
  A_long)``); needs equal ranks and scalings. peft has no such mode, so it is ours.
- ``linear``, ``ties``, ``dare_linear``, ``dare_ties``: peft's combinations,
  which also combine A and B separately (weights sqrt(w * scaling) on each side).
- ``svd``: peft's ``svd``: the exact weighted delta, truncated to rank
  ``svd_rank`` (default: the larger of the two ranks) by an SVD.

Everything goes through ``PeftModel.add_weighted_adapter`` except ``lsat``.
Known peft traps handled here: re-using an existing adapter name is a silent
no-op (we delete it first), the new adapter is inactive until ``set_adapter``
(we activate it), DARE drops weights at random (we seed it).
"""

from __future__ import annotations

import dataclasses

import torch

from llm4rec.errors import ConfigError

MERGE_MODES = ("exact", "lsat", "linear", "svd", "ties", "dare_linear", "dare_ties")
_PEFT_COMBINATION = {"exact": "cat", "linear": "linear", "svd": "svd", "ties": "ties"}
_PEFT_COMBINATION.update(dare_linear="dare_linear", dare_ties="dare_ties")
EQUAL_RANK_MODES = ("lsat", "linear", "ties", "dare_linear", "dare_ties")


def check_weight(weight: float, option: str = "weight") -> float:
    if not 0.0 <= float(weight) <= 1.0:
        raise ConfigError(f"{option}: the long-term adapter's weight must be in [0, 1], got {weight}")
    return float(weight)


def check_mergeable(model, long_name: str, short_name: str, mode: str) -> None:
    """Clear errors for adapters that cannot be merged in ``mode``."""
    if mode not in MERGE_MODES:
        raise ConfigError(f"task arithmetic mode {mode!r} is unknown; available: {list(MERGE_MODES)}")
    for name in (long_name, short_name):
        if name not in model.peft_config:
            raise ConfigError(f"adapter {name!r} is not loaded; loaded: {sorted(model.peft_config)}")
    long_config, short_config = model.peft_config[long_name], model.peft_config[short_name]
    if set(long_config.target_modules) != set(short_config.target_modules):
        raise ConfigError(
            f"adapters {long_name!r} and {short_name!r} adapt different modules "
            f"({sorted(long_config.target_modules)} vs {sorted(short_config.target_modules)}); they cannot be merged"
        )
    if mode in EQUAL_RANK_MODES and long_config.r != short_config.r:
        raise ConfigError(
            f"mode {mode!r} combines A and B matrices element-wise, so it needs equal ranks; "
            f"{long_name!r} has r={long_config.r}, {short_name!r} r={short_config.r} (use mode exact or svd)"
        )
    if mode == "lsat" and long_config.lora_alpha != short_config.lora_alpha:
        raise ConfigError(
            f"mode 'lsat' needs equal lora_alpha; {long_name!r} has {long_config.lora_alpha}, "
            f"{short_name!r} has {short_config.lora_alpha}"
        )


def merge_adapters(
    model,
    long_name: str,
    short_name: str,
    weight: float,
    mode: str,
    merged_name: str,
    density: float = 0.5,
    svd_rank: int | None = None,
    seed: int = 0,
) -> str:
    """Add adapter ``merged_name`` = ``mode``-merge of (``weight`` x long, ``1 - weight`` x short); make it active.

    An adapter already called ``merged_name`` is replaced.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    weight = check_weight(weight)
    check_mergeable(model, long_name, short_name, mode)
    if merged_name in (long_name, short_name):
        raise ConfigError(f"the merged adapter needs a new name, not {merged_name!r}")
    if merged_name in model.peft_config:
        if model.active_adapter == merged_name:
            model.set_adapter(long_name)
        model.delete_adapter(merged_name)
    if mode == "lsat":
        model.add_adapter(merged_name, dataclasses.replace(model.peft_config[long_name]))
        long_state = get_peft_model_state_dict(model, adapter_name=long_name)
        short_state = get_peft_model_state_dict(model, adapter_name=short_name)
        merged = {key: weight * long_state[key] + (1.0 - weight) * short_state[key] for key in long_state}
        set_peft_model_state_dict(model, merged, adapter_name=merged_name)
    else:
        if mode == "svd":
            _check_float32(model, (long_name, short_name))
        options = {}
        if mode in ("ties", "dare_linear", "dare_ties"):
            options["density"] = density
        if mode == "svd" and svd_rank is not None:
            options["svd_rank"] = svd_rank
        with torch.random.fork_rng(devices=[]):  # DARE's random drops: seeded, without disturbing the caller's RNG
            torch.manual_seed(seed)
            model.add_weighted_adapter(
                adapters=[long_name, short_name],
                weights=[weight, 1.0 - weight],
                adapter_name=merged_name,
                combination_type=_PEFT_COMBINATION[mode],
                **options,
            )
    model.set_adapter(merged_name)
    for name, parameter in model.named_parameters():  # a merged adapter is for inference, not training
        if f".{merged_name}." in name:
            parameter.requires_grad_(False)
    return merged_name


def _check_float32(model, names) -> None:
    for module in model.modules():
        lora_a = getattr(module, "lora_A", None)
        for name in names:
            if lora_a is not None and name in lora_a and lora_a[name].weight.dtype != torch.float32:
                raise ConfigError(
                    f"mode 'svd' needs float32 adapter weights (torch's SVD), but {name!r} holds "
                    f"{lora_a[name].weight.dtype}; keep peft's default autocast_adapter_dtype"
                )
