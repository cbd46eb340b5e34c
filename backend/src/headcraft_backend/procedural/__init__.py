"""Procedural head scans with ground truth: the test, evaluation and training data made here."""
