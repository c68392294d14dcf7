"""The model registry: name -> class. ``build_model(name, vocab_sizes, options)`` makes one."""

from __future__ import annotations

from llm4rec.ctr.models.base import CtrModel, ModelOptions
from llm4rec.ctr.models.dcn import DCN, DCNv2
from llm4rec.ctr.models.deepfm import DeepFM
from llm4rec.ctr.models.din import DIN
from llm4rec.ctr.models.emb_mlp import EmbMLP
from llm4rec.ctr.models.emerg import EmerG
from llm4rec.ctr.models.mf import MF
from llm4rec.ctr.models.nfm import NFM
from llm4rec.ctr.models.wide_deep import WideDeep
from llm4rec.errors import ConfigError

MODELS: dict[str, type[CtrModel]] = {
    "MF": MF,
    "EmbMLP": EmbMLP,
    "WideDeep": WideDeep,
    "DeepFM": DeepFM,
    "DCN": DCN,
    "DCNv2": DCNv2,
    "NFM": NFM,
    "DIN": DIN,
    "EmerG": EmerG,
}


def check_model_name(name: str, where: str = "model") -> None:
    if name not in MODELS:
        raise ConfigError(f"{where}: unknown model {name!r}; available models: {list(MODELS)}")


def build_model(name: str, vocab_sizes: dict[str, int], options: ModelOptions | None = None) -> CtrModel:
    check_model_name(name)
    return MODELS[name](vocab_sizes, options or ModelOptions())


__all__ = ["MODELS", "CtrModel", "build_model", "check_model_name"]
