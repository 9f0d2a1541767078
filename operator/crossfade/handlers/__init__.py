"""kopf handlers, wiring, settings and metrics of the operator process."""
