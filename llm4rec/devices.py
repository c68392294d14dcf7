"""The one rule that turns a device option (``--device``, ``device:``) into a torch device, for every side.

``None`` or ``"auto"`` is accelerate's choice (``PartialState().device``), as the LLM side's
``accelerate launch`` runs make it: the process's own GPU under a launcher, else CUDA when torch sees a GPU,
else the CPU. The project runs on CPUs and CUDA GPUs only, so another accelerator accelerate may pick (MPS,
XPU, ...) falls back to the CPU. An explicit name must be ``cpu``, ``cuda`` or ``cuda:N`` of a visible GPU;
anything else is a one-line :class:`ConfigError` naming the option. torch is imported when a name is checked,
so configs and commands import this module for free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm4rec.errors import ConfigError

if TYPE_CHECKING:
    import torch

AUTO = "auto"
DEVICE_TYPES = ("cpu", "cuda")


def check_device(name: str | None, where: str) -> None:
    """Refuse a device option that cannot be used here, without choosing one: an unknown name, or a CUDA
    device no visible GPU backs. ``None`` / ``"auto"`` always pass (they are resolved when a run starts)."""
    if name is None or name == AUTO:
        return
    import torch

    expected = "expected cpu, cuda or cuda:N (or auto)"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{where}: unknown device {name!r}; {expected}") from None
    if device.type not in DEVICE_TYPES:
        raise ConfigError(f"{where}: unknown device {name!r}; {expected}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: {name!r} asks for a GPU, but no CUDA GPU is visible to torch here; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"{where}: {name!r} asks for GPU {device.index}, but {count} are visible (0..{count - 1})"
            )


def resolve_device(name: str | torch.device | None, where: str = "device") -> torch.device:
    """The torch device ``name`` means (see the module docstring); a ConfigError naming ``where`` if unusable."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if name is None or name == AUTO:
        from accelerate import PartialState

        device = PartialState().device
        return device if device.type in DEVICE_TYPES else torch.device("cpu")
    check_device(name, where)
    return torch.device(name)
