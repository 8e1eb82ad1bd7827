"""Checking image files before TensorFlow sees them.

TensorFlow's decoders fail in the middle of an epoch, without naming the
file; Pillow can tell, per file, what is wrong. `check_image` answers for
one file: None when it is a readable image, else the reason.
"""

from __future__ import annotations

from pathlib import Path

MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb limit (about 13,000 x 13,000)


def check_image(path: Path) -> str | None:
    """None if `path` decodes completely as an image, else a short reason."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                return f"too large ({image.width}x{image.height} pixels)"
            image.load()  # decodes every pixel: a truncated file fails here
    except UnidentifiedImageError:
        return "not an image (unknown format)"
    except Image.DecompressionBombError:
        return "too large (decompression bomb limit)"
    except OSError as exc:
        return f"unreadable ({str(exc).splitlines()[0][:80]})"
    except Exception as exc:  # Pillow raises assorted errors on hostile files
        return f"unreadable ({type(exc).__name__})"
    return None
