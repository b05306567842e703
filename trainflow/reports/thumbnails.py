"""Small copies of the report's pictures, for places that hold them inline (the Prefect UI's
summary artifact, stored in the server's database)."""

from __future__ import annotations

import io

from PIL import Image

# Wide enough to read the figures' text in the UI's artifact pane; an 8-bit palette keeps a
# picture of flat colours to a few tens of KiB.
THUMBNAIL_MAX_SIDE = 720
THUMBNAIL_COLOURS = 128


def thumbnail_png(png: bytes, max_side: int = THUMBNAIL_MAX_SIDE) -> bytes:
    """`png` scaled down (never up) to fit `max_side` pixels, as a palette PNG."""
    with Image.open(io.BytesIO(png)) as image:
        picture = image.convert("RGB")
    picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    palette = picture.quantize(colors=THUMBNAIL_COLOURS, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
