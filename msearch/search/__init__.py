"""Turning a text query and its hits into what the user sees: language, result records, output formats, quicklooks."""
