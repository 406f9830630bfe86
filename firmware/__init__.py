"""Weight image format (docs/image.md): `write_image`, `read_image`, `check_image`."""

from .image import ImageError, check_image, read_image, write_image

__all__ = ["ImageError", "check_image", "read_image", "write_image"]
