"""Fault tests reuse the end-to-end sandbox fixtures (CRDs, moto, GKE test server, world)."""

from __future__ import annotations

from tests.e2e.conftest import aws_env, e2e_crds, moto_server, world

__all__ = ["aws_env", "e2e_crds", "moto_server", "world"]
