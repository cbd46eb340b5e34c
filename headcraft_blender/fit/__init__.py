"""Fit Scan: a scan object in, a fitted low-res head and a detailed head out."""
