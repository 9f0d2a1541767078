"""Async health probes producing the engine's observation values."""
