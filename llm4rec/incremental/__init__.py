"""Incremental-learning strategies beside IU / BU / FR, written against the CTR models' shared interface.

One file per family: ``replay`` (Reservoir, SPMF, MEGG), ``distill`` (IncCTR), ``error_memory`` and
``reloop`` (ReLoop2), ``meta`` (ASMG-GRU, ASMG-Linear), ``sml`` (SML); ``registry`` maps config names to
methods and ``config`` holds their typed settings. Importing the package imports no torch.
"""
