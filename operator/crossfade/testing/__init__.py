"""Test doubles that speak real wire formats, shared by the tests and the demo."""
