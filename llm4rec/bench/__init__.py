"""``llm4rec bench``: our training and scoring paths measured against the usual Hugging Face way.

architectures  random-init models from the published configs of real backbones and the scratch presets
data           the sequences measured: synthetic ids at ML-100K prompt lengths, or real tokenized prompts
peer           the usual way (Trainer + padding to longest + full-vocabulary logits; generate for scoring)
measure        timing, peak memory and interleaved repeats
flops          forward FLOPs of a Llama and the model FLOPs utilisation (MFU)
llm / lsat     the scoring, LoRA-training and LSAT-inference measurements
ctr            CTR models' training and scoring throughput
report         JSON lines and markdown tables
commands       the ``llm4rec bench`` subcommands
"""
