"""Fit a scan: 3DMM fit from landmarks, consistent subdivision, two-stage displacement registration."""
