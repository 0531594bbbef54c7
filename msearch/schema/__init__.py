"""What is stored and what it means: band definitions, pixels, the catalogue tables, the index manifest."""
