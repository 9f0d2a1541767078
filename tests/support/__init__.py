"""Test support: the real control-plane plugin and helpers."""
