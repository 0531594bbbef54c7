"""Archive -> tiles -> pixels -> embeddings -> FAISS + SQLite."""
