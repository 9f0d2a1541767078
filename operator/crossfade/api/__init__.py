"""InferencePool API (crossfade.dev/v1alpha1): pydantic models, the single source of truth."""
