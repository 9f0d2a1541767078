"""Capacity providers: node groups in each cloud behind one protocol."""
