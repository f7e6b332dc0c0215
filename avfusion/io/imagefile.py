"""Image files on disk (JPEG, PNG incl. 16-bit) decoded to arrays, shared by the readers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avfusion.errors import LogFormatError

__all__ = ["read_image_file"]


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
    if not raw.size:
        img = None
    elif _jpeg_components(raw) == 3:  # colour JPEG: libjpeg writes RGB directly, no second pass
        img = cv2.imdecode(raw, cv2.IMREAD_COLOR_RGB)
    else:
        img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise LogFormatError(f"{path}: not a decodable image (corrupt or truncated)")
    if img.ndim == 3 and img.shape[2] == 3 and _jpeg_components(raw) != 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return img


_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


def _jpeg_components(raw: npt.NDArray[np.uint8]) -> int:
    """Number of colour components in a JPEG's start-of-frame header (0: not a JPEG or none
    found). Walks the marker segments before the image data, usually a few hundred bytes."""
    n = int(raw.size)
    if n < 4 or raw[0] != 0xFF or raw[1] != 0xD8:
        return 0
    pos = 2
    while pos + 9 < n:
        if raw[pos] != 0xFF:
            return 0
        marker = int(raw[pos + 1])
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            return int(raw[pos + 9])
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return 0
        pos += 2 + (int(raw[pos + 2]) << 8 | int(raw[pos + 3]))
    return 0
