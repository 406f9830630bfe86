"""Weight image format."""
