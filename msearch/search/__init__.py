"""Query -> embeddings -> FAISS -> metadata -> results; evaluation."""
