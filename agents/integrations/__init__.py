"""Bridges to other training stacks (trl)."""
