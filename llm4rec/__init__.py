"""llm4rec: keep LLM-based recommenders up to date as user behaviour drifts."""

import os

# Bit-for-bit reproducible runs on Intel CPUs. MKL (torch's CPU BLAS) picks kernels by the memory alignment of
# each array there, so the same fit gave results that differed in the last bits from one run to the next
# (seen on a Xeon with AMX; on an AMD EPYC MKL takes one path). Strict conditional numerical reproducibility
# keeps the fastest instruction set and fixes the rest. MKL reads this when it starts, so it is set before
# anything imports torch; a value the user set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
