"""Animate: shape-key rigs for detailed heads, exact bakes to PC2, imported performances."""
