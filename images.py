"""Images as Twitter serves them, opened one way for the whole project.

    image = open_image("data/twitter2015/ner_img/123.jpg")      # PIL image: 8-bit RGB, upright; ImageError if unusable

Every way an image file can be unusable (missing, not an image, truncated, corrupt EXIF, a decompression bomb
larger than Pillow's Image.MAX_IMAGE_PIXELS limit, ...) becomes one ImageError naming the file and the reason, so
a caller can list the file and go on with the next one.
"""
import os

import numpy as np
from PIL import Image, ImageOps

from utils import not_a_file

IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "F")


class ImageError(ValueError):
    """An image file that cannot be used. `path` is the file, `reason` the exception type and message."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: unreadable image: {reason}")
        self.path, self.reason = os.fspath(path), reason


def find_image(img_dir, img_id, extensions=IMAGE_EXTENSIONS):
    """`<img_dir>/<img_id><ext>` for the first extension that exists (a regular file or not: read_image says what
    else it is), else None."""
    for ext in extensions:
        path = os.path.join(img_dir, img_id + ext)
        if os.path.exists(path):
            return path
    return None


def read_image(path, convert):
    """`convert(image)` of the image decoded as stored in the file (its own mode, size and orientation).

    `convert` must return a new image (convert, resize, ... do): the file is closed when this returns. Anything
    that goes wrong while decoding or converting is raised as ImageError.
    """
    problem = not_a_file(path)
    if problem and problem != "does not exist":  # (a missing file is FileNotFoundError below)
        raise ImageError(path, f"{problem}, not an image file")
    try:
        with Image.open(path) as image:
            image.load()
            return convert(image)
    except Exception as exc:  # noqa: BLE001 - decoders of broken files raise OSError, SyntaxError, struct.error,
        # IndexError, DecompressionBombError, ...: each means "this file cannot be used"
        raise ImageError(path, f"{type(exc).__name__}: {exc}") from None


def open_image(path):
    """The image of `path` as 8-bit RGB, upright (EXIF orientation applied). ImageError if it cannot be used."""
    return read_image(path, to_rgb)


def to_rgb(image):
    """Any PIL image (L, P, RGBA, CMYK, 16-bit, EXIF-rotated, ...) as an 8-bit RGB image, upright."""
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:  # 16/32-bit grey: scale to 0-255
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if image.mode != "F" and values.max() > 255 else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent parts become white
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
