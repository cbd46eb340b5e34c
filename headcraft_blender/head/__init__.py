"""Add Head: a parametric head (OpenHead or FLAME) with shape keys and a rig."""
