"""ReLoop2's error memory on the LLM side: the hidden state the scorer hands over, test-then-write, the names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llm4rec.compare.methods import parse_method
from llm4rec.errors import ConfigError
from llm4rec.llm.score import final_hidden_states, score_margins, score_margins_and_hidden
from llm4rec.llm.train import LoraSettings, attach_lora

SEQUENCES = [
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 30],
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 40, 41, 42],
    [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 50, 51],
]  # fmt: skip  (a 17-token shared prefix: the scorer's prefix cache is on)


def two_adapters(backbone):
    model = attach_lora(backbone.model, LoraSettings(r=4, dropout=0.0), "first")
    model = attach_lora(model, LoraSettings(r=2, dropout=0.0), "second")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.05)
    return model


@torch.no_grad()
def plain_hidden(model, adapter: str, sequence: list[int]) -> torch.Tensor:
    """The output layer's input at the last position of one unpadded prompt, in a plain full forward."""
    model.set_adapter(adapter)
    with final_hidden_states(model) as caught:
        model(input_ids=torch.tensor([sequence]))
    return caught[-1][0, -1].float()


def test_the_hidden_state_handed_to_the_memory_is_the_one_a_plain_forward_computes(backbone):
    model = two_adapters(backbone)
    pad = backbone.tokenizer.pad_token_id
    for adapters in (["first"], ["first", "second"]):  # one adapter, and a mixed-adapter pass
        margins, hidden = score_margins_and_hidden(model, SEQUENCES, backbone.answer_ids, pad, adapters)
        expected = score_margins(model, SEQUENCES, backbone.answer_ids, pad, adapters, "two")
        np.testing.assert_allclose(margins, expected, atol=1e-5, rtol=0)
        assert hidden.shape == (len(adapters), len(SEQUENCES), backbone.model.config.hidden_size)
        for k, adapter in enumerate(adapters):
            for i, sequence in enumerate(SEQUENCES):
                torch.testing.assert_close(torch.from_numpy(hidden[k, i]), plain_hidden(model, adapter, sequence),
                                           atol=1e-5, rtol=0)  # fmt: skip


class FixedAdapters:
    """Enough of PeriodAdapters for a method that serves one stored adapter: the session and its config."""

    def __init__(self, session, config) -> None:
        self.session, self.config = session, config


def test_a_tested_label_is_not_in_the_memory_when_its_sample_is_scored(
    planted_timeline, tiny_backbone_dir, movie_template, tmp_path
):
    from llm4rec.config import from_dict
    from llm4rec.incremental.config import ReLoop2Config
    from llm4rec.incremental.reloop import ReLoop2Method
    from llm4rec.llm.adapter_store import AdapterStore
    from llm4rec.llm.backbone import BackboneConfig, load_backbone
    from llm4rec.llm.lsat import PeriodAdapters, SingleAdapterMethod
    from llm4rec.llm.lsat_config import LsatConfig
    from llm4rec.llm.session import LoraSession
    from llm4rec.llm.train import LoraTrainConfig

    backbone = load_backbone(BackboneConfig(str(tiny_backbone_dir)), movie_template)
    config = from_dict(
        LsatConfig,
        {"backbone": {"model_name_or_path": str(tiny_backbone_dir)}, "long_term": {"periods": 1},
         "data": {"name": "ml-100k", "periods": {"n_periods": 4}}, "samples": {"val": 40, "history_fit": 60},
         "first_test_period": 3},
    )  # fmt: skip
    session = LoraSession(
        backbone, movie_template, planted_timeline, AdapterStore(tmp_path / "adapters"), LoraSettings(r=4),
        LoraTrainConfig(epochs=1, batch_size=8, learning_rate=5e-3), data_recipe={"planted": 1}, progress=False,
    )  # fmt: skip
    adapters = PeriodAdapters(session, config)
    tested = planted_timeline.period(3).sort_values("timestamp").head(48)
    memory = ReLoop2Config(stream_batch_size=8, prefill_val=True, weight=0.9, n_arrays=20, n_bits=2)

    def scores(rows):
        method = ReLoop2Method(SingleAdapterMethod("FR", adapters, adapters.full_retrain), memory, seed=0)
        method.fit(planted_timeline, 2)
        return method.predict_proba(rows), method

    first, method = scores(tested)
    assert method.name == "FR+ReLoop2" and len(method.memory) == 40 + 48  # prefilled with 40 val rows, then 48
    assert not np.allclose(first, method.base.score(tested))  # the memory does move the scores
    last = tested.index[-8:]  # the stream's last batch (time order): its labels are written after it is scored
    flipped = tested.copy()
    flipped.loc[last, "label"] = 1 - flipped.loc[last, "label"]
    again, _ = scores(flipped)
    np.testing.assert_array_equal(again, first)
    early = tested.index[:8]  # the first batch's labels do reach every later batch
    flipped = tested.copy()
    flipped.loc[early, "label"] = 1  # all liked (a flip could keep the count of positives)
    changed, _ = scores(flipped)
    np.testing.assert_array_equal(changed[:8], first[:8])
    assert not np.array_equal(changed[8:], first[8:])


def test_any_llm_row_takes_the_memory_by_its_suffix():
    from llm4rec.compare.config import ExperimentConfig
    from llm4rec.config import from_dict

    for name, family in [("LLM-FT+ReLoop2", "FT"), ("LSAT-ensemble+ReLoop2", "LSAT"), ("SD-LoRA+ReLoop2", "SD-LoRA")]:
        spec = parse_method(name)
        assert spec.side == "llm" and spec.entry.family == family and "reloop2" in spec.entry.sections
    with pytest.raises(ConfigError, match="is not a method"):
        parse_method("LLM-XX+ReLoop2")
    config = from_dict(
        ExperimentConfig,
        {"methods": ["LLM-FT", "LLM-FT+ReLoop2"], "llm": {"backbone": {"model_name_or_path": "x"},
                                                          "reloop2": {"weight": 0.7}}},
    )  # fmt: skip
    from llm4rec.llm.catalogue import key_settings

    plain, memory = (key_settings(s.entry, config.lsat) for s in config.specs)
    assert "reloop2" not in plain and memory["reloop2"]["weight"] == 0.7
