"""Fit a scan: 3DMM fit from landmarks, two-stage displacement registration."""
