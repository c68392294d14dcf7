"""Incremental-learning strategies beside IU / BU / FR, written against the CTR models' shared interface.

One file per family: ``replay`` (Reservoir, SPMF, MEGG), ``distill`` (IncCTR), ``error_memory`` and
``reloop`` (ReLoop2), ``meta`` (ASMG-GRU, ASMG-Linear), ``sml`` (SML); ``config`` holds their typed settings.
:mod:`llm4rec.ctr.catalogue` names them and builds them. Importing the package imports no torch.

The package stays beside ``ctr/`` rather than inside it: every strategy here subclasses the CTR update method
today, but ReLoop2's error memory (:mod:`~llm4rec.incremental.reloop`, :mod:`~llm4rec.incremental.error_memory`)
wraps any method that gives hidden vectors, an LLM method included, and the replay buffers select rows of a
timeline, not CTR tensors: the incremental-learning machinery serves both sides.
"""
