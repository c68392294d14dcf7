"""Entry point for `accelerate launch scripts/train_lsat.py --config CONFIG`.

    accelerate launch scripts/train_lsat.py --config configs/lsat/ml-100k-scratch.yaml   # = llm4rec lsat
    accelerate launch scripts/train_lsat.py train --config configs/llm/ml-100k-lora.yaml  # = llm4rec train
    accelerate launch scripts/train_lsat.py fewshot --config configs/llm/ml-100k-fewshot.yaml  # = llm4rec fewshot

It runs the same code as the `llm4rec` command; accelerate decides the
devices, the number of processes and the mixed precision.
"""

import sys

from llm4rec.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    command = argv.pop(0) if argv and argv[0] in ("lsat", "train", "fewshot") else "lsat"
    sys.exit(main([command, *argv]))
