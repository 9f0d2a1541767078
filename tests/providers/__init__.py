"""Tests of the capacity providers (one module per provider, one shared conformance suite)."""
