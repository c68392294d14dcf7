"""Timeline rows -> prompts -> tokenized ``datasets.Dataset``, cached on disk.

Each sample is one interaction: the user's earlier liked / disliked titles
(from the data layer's history columns), the target title, and the label.
A prompt longer than ``cutoff`` tokens loses its *oldest* history titles,
one at a time, until it fits; the instruction, the question and the target
are never cut. Tokenized sets are stored as Arrow under
``<cache>/samples/<key>``, where the key hashes everything that made them
(template, tokenizer, cutoff, the rendered prompts and labels), so a changed
input never reuses a stale set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict

import datasets
import numpy as np
import pandas as pd

from llm4rec.data.store import cache_dir
from llm4rec.errors import ConfigError, DataError, brief
from llm4rec.io import atomic_directory
from llm4rec.llm.backbone import tokenizer_fingerprint
from llm4rec.llm.prompts import PromptTemplate

log = logging.getLogger(__name__)

SAMPLES_FORMAT = 1  # bump when the stored columns change


def title_lookup(items: pd.DataFrame) -> dict[str, str]:
    titles = items.set_index("item_id")["title"]
    return {k: v for k, v in titles.items() if isinstance(v, str) and v}


def newest_history(history: list, labels: list, keep: int) -> tuple[list, list]:
    """The liked / disliked items among the newest ``keep`` of ``history`` (oldest first), each by its own
    label (an item can occur twice with different labels)."""
    newest = slice(len(history) - keep, None) if keep else slice(0, 0)
    pairs = list(zip(history[newest], labels[newest], strict=True))
    return [item for item, y in pairs if y == 1], [item for item, y in pairs if y != 1]


def render_prompts(rows: pd.DataFrame, titles: dict[str, str], template: PromptTemplate) -> list[str]:
    def title(item_id: str) -> str:
        return titles.get(item_id, item_id)  # an item without a title is named by its id

    return [
        template.render([title(i) for i in liked], [title(i) for i in disliked], title(target))
        for liked, disliked, target in zip(
            rows["liked_item_ids"], rows["disliked_item_ids"], rows["item_id"], strict=True
        )
    ]


def fixed_prompt_length(template: PromptTemplate, tokenizer, target: str = "") -> int:
    """Tokens of a prompt with no history (the part truncation can never remove)."""
    return len(tokenizer(template.render([], [], target))["input_ids"])


def _fit_prompt(row, titles: dict[str, str], template: PromptTemplate, tokenizer, cutoff: int):
    """(history items kept, prompt, token ids) for the longest newest-history suffix that fits ``cutoff``."""
    history, labels = list(row.history_item_ids), list(row.history_labels)

    def attempt(keep: int) -> tuple[str, list[int]]:
        kept_liked, kept_disliked = newest_history(history, labels, keep)
        text = template.render(
            [titles.get(i, i) for i in kept_liked],
            [titles.get(i, i) for i in kept_disliked],
            titles.get(row.item_id, row.item_id),
        )
        return text, tokenizer(text)["input_ids"]

    lo, hi, best = 0, len(history) - 1, None  # the full history is known not to fit
    while lo <= hi:  # binary search: more history never makes a prompt shorter
        mid = (lo + hi) // 2
        text, token_ids = attempt(mid)
        if len(token_ids) <= cutoff:
            best, lo = (mid, text, token_ids), mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ConfigError(
            f"cutoff {cutoff}: the prompt for user {row.user_id} and item {row.item_id} needs "
            f"{len(attempt(0)[1])} tokens even without history (the target title is long); raise cutoff"
        )
    return best


def tokenize_with_cutoff(
    rows: pd.DataFrame, prompts: list[str], titles: dict[str, str], template: PromptTemplate, tokenizer, cutoff: int
) -> tuple[list[str], list[list[int]], np.ndarray]:
    """Token ids of ``prompts`` (rendered from ``rows``), re-rendered with fewer history items where too long;
    also how many history items each prompt kept."""
    fixed = fixed_prompt_length(template, tokenizer)
    if fixed > cutoff:
        raise ConfigError(
            f"cutoff {cutoff} is smaller than the fixed part of the prompt ({fixed} tokens without any history "
            f"or target title, template {template.source}); raise cutoff"
        )
    prompts = list(prompts)
    ids = tokenizer(prompts)["input_ids"]
    kept = rows["history_item_ids"].map(len).to_numpy().astype(np.int64)
    too_long = [k for k, x in enumerate(ids) if len(x) > cutoff]
    for k, row in zip(too_long, rows.iloc[too_long].itertuples(index=False), strict=True):
        kept[k], prompts[k], ids[k] = _fit_prompt(row, titles, template, tokenizer, cutoff)
    if too_long:
        log.info("%d of %d prompts cut to %d tokens (oldest history titles dropped)", len(too_long), len(ids), cutoff)
    return prompts, ids, kept


def samples_key(
    rows: pd.DataFrame, prompts: list[str], labels: np.ndarray, template: PromptTemplate, tokenizer, cutoff: int
) -> str:
    """Hash of everything a stored set holds or was made from (the ids too: prompts do not name the user)."""
    digest = hashlib.sha256()
    for column in ("user_id", "item_id"):
        digest.update(pd.util.hash_pandas_object(rows[column].astype(str), index=False).to_numpy().tobytes())
    digest.update(json.dumps([SAMPLES_FORMAT, asdict(template), cutoff, tokenizer_fingerprint(tokenizer)]).encode())
    for prompt in prompts:
        digest.update(prompt.encode())
        digest.update(b"\0")
    digest.update(np.asarray(labels, dtype=np.int8).tobytes())
    return digest.hexdigest()[:24]


SAMPLE_COLUMNS = ["user_id", "item_id", "label", "prompt", "input_ids", "length", "history_kept"]


def load_cached_samples(where, n_rows: int) -> datasets.Dataset:
    """The tokenized set stored at ``where``; a damaged one (a truncated or missing Arrow file, unreadable JSON, other
    rows or columns than its key promises) is a DataError saying how to rebuild it."""
    problem = None
    try:
        dataset = datasets.load_from_disk(str(where))
    except (OSError, ValueError, KeyError, TypeError) as error:  # JSON, Arrow IPC, a missing file
        problem = brief(error)
    else:
        if not isinstance(dataset, datasets.Dataset) or dataset.column_names != SAMPLE_COLUMNS:
            problem = f"columns {getattr(dataset, 'column_names', None)}, expected {SAMPLE_COLUMNS}"
        elif len(dataset) != n_rows:
            problem = f"{len(dataset)} samples, expected {n_rows}"
    if problem is not None:
        raise DataError(
            f"tokenized samples cache {where} is damaged ({problem}); delete that directory (rm -r {where}) and "
            "run again to rebuild it"
        )
    return dataset


def build_samples(
    rows: pd.DataFrame,
    items: pd.DataFrame,
    template: PromptTemplate,
    tokenizer,
    cutoff: int = 512,
    cache: bool = True,
) -> datasets.Dataset:
    """Columns: user_id, item_id, label, prompt, input_ids, length, history_kept.

    ``rows`` are timeline rows (they carry ``liked_item_ids`` / ``disliked_item_ids``).
    """
    if cutoff < 1:
        raise ConfigError(f"cutoff: must be a positive number of tokens, got {cutoff}")
    titles = title_lookup(items)
    labels = rows["label"].to_numpy()
    # The key is computed from the untruncated prompts: truncation depends only on them, the tokenizer and cutoff.
    prompts = render_prompts(rows, titles, template)
    key = samples_key(rows, prompts, labels, template, tokenizer, cutoff)
    where = cache_dir() / "samples" / key
    if cache and (where / "dataset_info.json").is_file():
        log.info("tokenized samples from cache %s", where)
        return load_cached_samples(where, len(rows))
    prompts, ids, kept = tokenize_with_cutoff(rows, prompts, titles, template, tokenizer, cutoff)
    dataset = datasets.Dataset.from_dict(
        {
            "user_id": rows["user_id"].astype(str).tolist(),
            "item_id": rows["item_id"].astype(str).tolist(),
            "label": labels.astype(np.int64).tolist(),
            "prompt": prompts,
            "input_ids": ids,
            "length": [len(x) for x in ids],
            "history_kept": kept.tolist(),
        }
    )
    if cache:
        with atomic_directory(where) as tmp:
            dataset.save_to_disk(str(tmp))
        dataset = load_cached_samples(where, len(rows))
    return dataset
