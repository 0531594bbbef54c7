"""Search evaluation: retrieval metrics, prompt templates and labelled query sets (numpy only, no model)."""
