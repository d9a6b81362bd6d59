"""Baselines that SAM variants are compared against (nnU-Net v2)."""
