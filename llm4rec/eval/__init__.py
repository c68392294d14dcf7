"""Shared evaluation: metrics, the period protocol, and result reports."""
