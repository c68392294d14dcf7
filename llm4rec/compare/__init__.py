"""`llm4rec compare`: LLM update methods, CTR baselines, incremental methods and a reference in one table.

``methods`` (what a name means), ``config`` (the experiment), ``store`` (one file per finished result),
``runner`` (the resumable loop), ``report`` (tables and plots from disk), ``commands`` (the CLI).
"""
