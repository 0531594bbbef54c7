"""Vector indexes over tile embeddings: exact below a size threshold, inverted files above it."""
