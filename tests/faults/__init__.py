"""Fault-injection tests: crashes and hostile conditions during a failover."""
