"""llm4rec: keep LLM-based recommenders up to date as user behaviour drifts."""

__version__ = "0.1.0"
