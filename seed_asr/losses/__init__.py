"""Sequence-level training objectives (pure tensor functions)."""
