"""Pure failover decision core: no I/O, no clock reads, no SDK imports."""
