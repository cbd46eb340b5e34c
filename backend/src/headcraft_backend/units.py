"""HeadCraft's optimisation units: FLAME metres x 120 ("NPHM x 30", 1 unit ~ 8.33 mm).

Loss weights, pruning thresholds and the +-20 displacement clip of the paper are in these
units; head models and the wire stay in metres. Convert with these two functions only.
Stdlib only: the extension gets a copy beside wire.py (`python build.py sync`).
"""
HC_UNITS_PER_METRE = 120.0
MM_PER_UNIT = 1000.0 / HC_UNITS_PER_METRE


def to_units(x):
    return x * HC_UNITS_PER_METRE


def to_metres(x):
    return x / HC_UNITS_PER_METRE
