"""Image files on disk (JPEG, PNG incl. 16-bit) decoded to arrays, shared by the readers.

Colour JPEGs (3 components, 8-bit: what camera logs hold) are decoded by libjpeg-turbo through
``simplejpeg``, which writes RGB rows straight into the output array: 3.1 ms for a nuScenes-size
1600×900 image against 7.0 ms for ``cv2.imdecode(..., IMREAD_COLOR_RGB)`` on the same
libjpeg-turbo (measured 2026-11-22 on the 2-core VM, one thread, bit-identical pixels). Since
camera data is decoding-bound (six JPEGs are most of a training sample's time) this is the
largest single saving of ``FusionDataset``. Everything else (grey and 16-bit PNG/JPEG, RGBA
PNG) goes through OpenCV. Neither path applies EXIF orientation: calibrations refer to the
sensor's pixel array as recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import LogFormatError

__all__ = ["decode_colour_jpeg", "read_image_file"]

logger = logging.getLogger(__name__)


def read_image_file(path: Path) -> npt.NDArray[Any]:
    """Decode an image file: colour as RGB uint8 (H, W, 3; alpha dropped), grey and 16-bit
    (e.g. radiometric thermal) unchanged. Raises ``LogFormatError`` naming the file."""
    import cv2

    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise LogFormatError(f"{path}: image is missing") from exc
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    rgb = decode_colour_jpeg(raw, str(path))
    if rgb is not None:
        return rgb
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if img is None:
        raise LogFormatError(f"{path}: not a decodable image (corrupt or truncated)")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return img


def decode_colour_jpeg(raw: npt.NDArray[np.uint8], where: str) -> npt.NDArray[np.uint8] | None:
    """RGB pixels (H, W, 3) of ``raw`` when it is a colour JPEG (3 components, 8-bit samples,
    Huffman coded: baseline, extended or progressive), else None (the caller decodes it another
    way). Decoded by libjpeg-turbo (``simplejpeg``, strict). A file libjpeg can only decode with
    a warning is decoded anyway and the warning logged with ``where``, except a file that ends
    before its image data does (its missing rows would be filled with grey): that, and data
    libjpeg cannot decode at all, raise ``LogFormatError`` naming ``where``."""
    import simplejpeg

    if _jpeg_frame(raw) not in _FAST_FRAMES:
        return None
    try:
        pixels: npt.NDArray[np.uint8] = simplejpeg.decode_jpeg(raw, "RGB")
        return pixels
    except ValueError as exc:
        strict_error = str(exc)
    if "premature end" in strict_error.lower():
        raise LogFormatError(f"{where}: JPEG is truncated ({strict_error})")
    try:
        pixels = simplejpeg.decode_jpeg(raw, "RGB", strict=False)
    except ValueError as exc:
        raise LogFormatError(f"{where}: not a decodable image (corrupt JPEG: {exc})") from exc
    logger.warning("%s: JPEG decoded with a libjpeg warning: %s", where, strict_error)
    return pixels


_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
#: (start-of-frame marker, sample precision, components) that go to ``simplejpeg``: Huffman
#: baseline / extended / progressive colour JPEGs with 8-bit samples.
_FAST_FRAMES = frozenset({(0xC0, 8, 3), (0xC1, 8, 3), (0xC2, 8, 3)})


def _jpeg_frame(raw: npt.NDArray[np.uint8]) -> tuple[int, int, int]:
    """(start-of-frame marker, sample precision, components) of a JPEG's frame header; (0, 0, 0)
    when ``raw`` is not a JPEG or has no frame header. Walks the marker segments before the
    image data, usually a few hundred bytes."""
    n = int(raw.size)
    if n < 4 or raw[0] != 0xFF or raw[1] != 0xD8:
        return 0, 0, 0
    pos = 2
    while pos + 9 < n:
        if raw[pos] != 0xFF:
            return 0, 0, 0
        marker = int(raw[pos + 1])
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            return marker, int(raw[pos + 4]), int(raw[pos + 9])
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return 0, 0, 0
        pos += 2 + (int(raw[pos + 2]) << 8 | int(raw[pos + 3]))
    return 0, 0, 0
