"""The incident domain: models, vocabularies, schemas, lifecycle and services (no Flask here)."""
