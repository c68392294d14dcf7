"""Prompt templates, rendering, truncation and the tokenized-samples cache."""

from __future__ import annotations

import pandas as pd
import pytest

from llm4rec.errors import ConfigError
from llm4rec.llm.prompts import PromptTemplate, load_template
from llm4rec.llm.samples import build_samples, newest_history, tokenize_with_cutoff

# The LSAT authors' prompt (TianhaoShi2001/LSAT: utils.generate_prompt, with the instruction and input their data
# processing writes), as their code builds it for a training sample, typed out here from that code.
REFERENCE_WRAPPER = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:\n{output}"
)
REFERENCE_INSTRUCTION = (
    "Given the user's preference and unpreference, identify whether the user will like the target {kind} by "
    'answering "Yes." or "No.".'
)
REFERENCE_INPUT = (
    "User Preference: {preference}\nUser Unpreference: {unpreference}\n"
    "Whether the user will like the target {kind} {target}?"
)


def reference_prompt(kind: str, preference: list[str], unpreference: list[str], target: str) -> str:
    def quoted(titles):
        return ", ".join(f'"{t}"' for t in titles)

    return REFERENCE_WRAPPER.format(
        instruction=REFERENCE_INSTRUCTION.format(kind=kind),
        input=REFERENCE_INPUT.format(
            kind=kind, preference=quoted(preference), unpreference=quoted(unpreference), target=f'"{target}"'
        ),
        output="",
    )


@pytest.mark.parametrize("kind", ["movie", "book"])
def test_templates_render_the_lsat_reference_prompt_to_the_character(kind):
    template = load_template(kind)
    args = (["Heat (1995)", "Fargo (1996)"], ["Jumanji (1995)"], "Toy Story (1995)")
    assert template.render(*args) == reference_prompt(kind, *args)
    assert template.instruction.endswith('by answering "Yes." or "No.".')
    assert (template.answer(1), template.answer(0)) == ("Yes.", "No.")


def test_template_missing_a_placeholder_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("wrapper: W\ninstruction: I\ninput: 'Liked {preference}; target {target}'\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*missing \{unpreference\}"):
        load_template(str(path))


def test_template_with_an_unknown_placeholder_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown \{rating\}"):
        PromptTemplate("W", "I", "{preference} {unpreference} {target} {rating}")


def test_unknown_template_name_lists_the_builtins():
    with pytest.raises(ConfigError, match="movie, book"):
        load_template("films")


def test_user_template_file_is_used(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "wrapper: Rate.\ninstruction: Answer Sure or Nope.\n"
        "input: 'Likes {preference}. Dislikes {unpreference}. Target {target}?'\n"
        "answers: {positive: Sure, negative: Nope}\n"
    )
    template = load_template(str(path))
    assert template.render(["A"], [], "B").endswith('Likes "A". Dislikes . Target "B"?\n\n### Response:\n')
    assert template.answers.positive == "Sure"


def test_newest_history_keeps_the_newest_items_with_their_own_labels():
    history, labels = ["a", "b", "c", "d", "e"], [1, 0, 1, 1, 0]
    assert newest_history(history, labels, 5) == (["a", "c", "d"], ["b", "e"])
    assert newest_history(history, labels, 3) == (["c", "d"], ["e"])
    assert newest_history(history, labels, 1) == ([], ["e"])
    assert newest_history(history, labels, 0) == ([], [])
    # An item rated twice: liked first, disliked later. The newest one is the disliked 'A'.
    assert newest_history(["A", "B", "A"], [1, 0, 0], 1) == ([], ["A"])
    assert newest_history(["A", "B", "A"], [1, 0, 0], 2) == ([], ["B", "A"])


def _rows(history, labels, target="t", user="u1"):
    return pd.DataFrame(
        {
            "user_id": [user],
            "item_id": [target],
            "label": [1],
            "history_item_ids": [history],
            "history_labels": [labels],
            "liked_item_ids": [[i for i, y in zip(history, labels, strict=True) if y == 1]],
            "disliked_item_ids": [[i for i, y in zip(history, labels, strict=True) if y != 1]],
        }
    )


def test_truncation_drops_the_oldest_titles_and_keeps_question_and_target(tiny_backbone_dir, movie_template):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    titles = {f"m{i}": f"A rather long movie title number {i} (1990)" for i in range(10)}
    titles["t"] = "The Target Film (1999)"
    history = [f"m{i}" for i in range(10)]  # oldest first
    liked, disliked = history[0::2], history[1::2]
    rows = _rows(history, [1, 0] * 5)
    full = movie_template.render([titles[i] for i in liked], [titles[i] for i in disliked], titles["t"])
    full_length = len(tokenizer(full)["input_ids"])
    cutoff = full_length - 25
    prompts, ids, kept = tokenize_with_cutoff(rows, [full], titles, movie_template, tokenizer, cutoff)
    assert len(ids[0]) <= cutoff and 0 < kept[0] < 10
    text = prompts[0]
    assert text.endswith('Whether the user will like the target movie "The Target Film (1999)"?\n\n### Response:\n')
    assert text.startswith("Below is an instruction")
    kept_titles = {i for i in history if titles[i] in text}
    assert kept_titles == set(history[10 - kept[0] :])  # the newest ones
    # one more title would not have fitted
    more = history[10 - kept[0] - 1 :]
    longer = movie_template.render(
        [titles[i] for i in liked if i in more], [titles[i] for i in disliked if i in more], titles["t"]
    )
    assert len(tokenizer(longer)["input_ids"]) > cutoff


def test_cutoff_below_the_fixed_prompt_is_an_error(tiny_backbone_dir, movie_template):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    rows = _rows(["m0"], [1])
    with pytest.raises(ConfigError, match="smaller than the fixed part of the prompt"):
        tokenize_with_cutoff(rows, ["x"], {}, movie_template, tokenizer, 10)


def test_samples_are_cached_by_content(tiny_backbone_dir, movie_template, planted_timeline, cache):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    rows = planted_timeline.period(1, "val")
    first = build_samples(rows, planted_timeline.items, movie_template, tokenizer, cutoff=512)
    assert first.column_names == ["user_id", "item_id", "label", "prompt", "input_ids", "length", "history_kept"]
    assert first["label"] == rows["label"].tolist()
    assert first["input_ids"][0] == tokenizer(first["prompt"][0])["input_ids"]
    stored = list((cache / "samples").iterdir())
    assert len(stored) == 1
    again = build_samples(rows, planted_timeline.items, movie_template, tokenizer, cutoff=512)
    assert again["input_ids"] == first["input_ids"]
    assert len(list((cache / "samples").iterdir())) == 1  # read back, not rebuilt
    build_samples(rows, planted_timeline.items, movie_template, tokenizer, cutoff=400)
    flipped = rows.assign(label=1 - rows["label"])
    build_samples(flipped, planted_timeline.items, movie_template, tokenizer, cutoff=512)
    assert len(list((cache / "samples").iterdir())) == 3  # another cutoff or other labels: another key
    renamed = rows.assign(user_id=rows["user_id"] + "-b")  # same prompts, other users
    assert (
        build_samples(renamed, planted_timeline.items, movie_template, tokenizer)["user_id"]
        == renamed["user_id"].tolist()
    )
    assert len(list((cache / "samples").iterdir())) == 4
