"""Evaluation of generated heads against reference sets (paper Table 1)."""
