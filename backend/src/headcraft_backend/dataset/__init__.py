"""Data sets: procedural scans with ground truth (`synth`) and registering folders of scans
into displacement maps on Ray (`register`)."""
