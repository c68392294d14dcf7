"""Data layer: raw files -> canonical tables -> chronological periods -> histories."""
