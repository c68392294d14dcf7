"""Adapters on disk: a standard peft adapter directory (safetensors) plus ``llm4rec.json``.

``llm4rec.json`` records what the adapter belongs with: the base model (its
path or id and a fingerprint of its weights), the prompt template, the
answer token ids, and the periods it was trained on. Loading checks the
fingerprint, so an adapter is never silently applied to another base model.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

from llm4rec.errors import ConfigError, brief
from llm4rec.io import atomic_directory, write_json
from llm4rec.llm.backbone import META_FILE, Backbone, check_safetensors
from llm4rec.llm.prompts import PromptTemplate

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
REMEDY = "train the adapter again or copy it again from where it was trained"


@contextlib.contextmanager
def quiet_peft_warnings():
    """peft reads a transformers attribute deprecated in v5 when it wraps a model; that warning is theirs, and
    says nothing to our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def save_adapter(
    model, out: str | Path, backbone: Backbone, template: PromptTemplate, cutoff: int, extra: dict
) -> Path:
    """Write the active adapter of PeftModel ``model`` to ``out`` (replaced atomically) with its metadata:
    ``cutoff`` is the prompt token limit it was trained with (``llm4rec predict`` uses it by default)."""
    name = model.active_adapter
    out = Path(out)
    with atomic_directory(out) as tmp:
        model.save_pretrained(str(tmp), selected_adapters=[name], safe_serialization=True)
        if name != "default":  # peft puts non-default adapters in a sub-directory; keep one flat layout
            for path in (tmp / name).iterdir():
                shutil.move(str(path), tmp / path.name)
            (tmp / name).rmdir()
        meta = {
            "kind": "lora-adapter",
            "base_model": backbone.config.name,
            "base_fingerprint": backbone.fingerprint,
            "template": asdict(template),
            "cutoff": cutoff,
            "answer_token_ids": {"yes": backbone.answer_ids[0], "no": backbone.answer_ids[1]},
            **extra,
        }
        write_json(tmp / META_FILE, meta)
    return out


def _json_object(path: Path) -> dict:
    """A JSON file of the adapter directory that must hold an object; anything else is one line naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"adapter file {path} is not valid JSON ({brief(error)}); {REMEDY}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"adapter file {path} holds a JSON {type(data).__name__}, not an object; {REMEDY}")
    return data


def check_lora_config(path: Path) -> dict:
    """``adapter_config.json`` of a LoRA adapter as llm4rec writes it: the fields peft needs, of the right types
    (peft itself fails on them with a traceback deep in its layers)."""
    config = _json_object(path)
    where = f"adapter file {path}"
    if config.get("peft_type") != "LORA":
        raise ConfigError(f"{where}: peft_type is {config.get('peft_type')!r}, expected 'LORA'; {REMEDY}")
    r, alpha, modules = config.get("r"), config.get("lora_alpha"), config.get("target_modules")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"{where}: r must be a positive integer (the LoRA rank), got {r!r}; {REMEDY}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
        raise ConfigError(f"{where}: lora_alpha must be a positive number, got {alpha!r}; {REMEDY}")
    names_ok = isinstance(modules, list) and modules and all(isinstance(m, str) for m in modules)
    if not (isinstance(modules, str) or names_ok):
        raise ConfigError(f"{where}: target_modules must name the adapted modules, got {modules!r}; {REMEDY}")
    return config


def read_adapter_meta(path: str | Path) -> dict:
    """``llm4rec.json`` of an adapter directory, after checking its three files read back (the peft config, the
    safetensors header, the metadata): a damaged one is one line naming it."""
    path = Path(path)
    for needed in (CONFIG_FILE, WEIGHTS_FILE, META_FILE):
        if not (path / needed).is_file():
            hint = " (only safetensors adapters are loaded, never pickles)" if needed == WEIGHTS_FILE else ""
            raise ConfigError(f"adapter {path}: {needed} is missing{hint}; expected a directory written by llm4rec")
    check_lora_config(path / CONFIG_FILE)
    check_safetensors(path / WEIGHTS_FILE, REMEDY)
    return _json_object(path / META_FILE)


def check_adapter_fits(meta: dict, backbone: Backbone, path: str | Path) -> None:
    if meta.get("base_fingerprint") != backbone.fingerprint:
        raise ConfigError(
            f"adapter {path} was trained on base model {meta.get('base_model')!r} (fingerprint "
            f"{meta.get('base_fingerprint')}), not on {backbone.config.name!r} (fingerprint "
            f"{backbone.fingerprint}); load it with the base model it was trained on"
        )
    answers = meta.get("answer_token_ids", {})
    if (answers.get("yes"), answers.get("no")) != tuple(backbone.answer_ids):
        raise ConfigError(
            f"adapter {path}: trained with answer tokens {answers}, but the template and tokenizer now give "
            f"{backbone.answer_ids}; use the template it was trained with"
        )


def load_adapter(backbone: Backbone, path: str | Path, adapter_name: str = "default", is_trainable: bool = False):
    """The backbone's model with the adapter at ``path`` loaded and active (a PeftModel)."""
    from peft import PeftModel
    from safetensors import SafetensorError

    path = Path(path)
    meta = read_adapter_meta(path)
    check_adapter_fits(meta, backbone, path)
    model = backbone.model
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(path), adapter_name=adapter_name, is_trainable=is_trainable)
            model.set_adapter(adapter_name)
        else:
            with quiet_peft_warnings():
                model = PeftModel.from_pretrained(
                    model, str(path), adapter_name=adapter_name, is_trainable=is_trainable
                )
    except SafetensorError as error:
        raise ConfigError(
            f"adapter {path}: {path / WEIGHTS_FILE} does not read back ({brief(error)}); {REMEDY}"
        ) from None
    except RuntimeError as error:  # torch's load_state_dict: "size mismatch for ...", one line per tensor
        mismatch = [line.strip() for line in str(error).splitlines() if "size mismatch" in line]
        if not mismatch:
            raise
        raise ConfigError(
            f"adapter {path}: {path / WEIGHTS_FILE} holds tensors of other shapes than {CONFIG_FILE} and the base "
            f"model give ({len(mismatch)} tensors, first: {mismatch[0]}); it is damaged or belongs to another "
            f"model: {REMEDY}"
        ) from None
    except (ValueError, KeyError, TypeError) as error:  # peft's reading of adapter_config.json
        raise ConfigError(
            f"adapter {path}: {path / CONFIG_FILE} does not describe a LoRA adapter of this base model "
            f"({brief(error)}); {REMEDY}"
        ) from None
    model.eval()
    return model


def template_from_meta(meta: dict, path: str | Path) -> PromptTemplate:
    from llm4rec.config import from_dict

    template = dict(meta.get("template") or {})
    if not template:
        raise ConfigError(f"adapter {path}: {META_FILE} has no template")
    return from_dict(PromptTemplate, template, where=f"{path}/{META_FILE}:template")
