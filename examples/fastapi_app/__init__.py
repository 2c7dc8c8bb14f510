"""A small host app on FastAPI that uses consentkit the way a customer would (see README.md)."""
