"""Workflows: work made of several steps (pipelines; chains, groups and chords)."""
