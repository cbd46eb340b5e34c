"""Animation: displacements carried by the surface, shape-key rigs and exact per-frame bakes."""
