"""Media type detection, metadata and renditions for catalogued files."""
