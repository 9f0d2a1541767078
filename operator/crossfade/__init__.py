"""crossfade: a Kubernetes operator that keeps LLM inference serving when one cloud falters."""

__version__ = "0.1.0"
