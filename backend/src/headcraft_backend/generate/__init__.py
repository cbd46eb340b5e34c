"""Generation: the StyleGAN2 over UV displacement maps, checkpoints, sampling (issue 5)."""
