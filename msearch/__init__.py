"""msearch: text search over archives of Sentinel-2 imagery with multispectral CLIP encoders."""

__version__ = "0.1.0"
