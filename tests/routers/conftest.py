"""Fixtures of the router tests: the moto server, fault proxy and AWS env for Route53."""

from __future__ import annotations

from tests.support.moto_server import aws_env, fault_proxy, moto_server

__all__ = ["aws_env", "fault_proxy", "moto_server"]
