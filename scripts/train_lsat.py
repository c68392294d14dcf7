"""Entry point for `accelerate launch scripts/train_lsat.py --config CONFIG`.

It runs the same code as `llm4rec train --config CONFIG`; accelerate decides
the devices, the number of processes and the mixed precision.
"""

import sys

from llm4rec.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
