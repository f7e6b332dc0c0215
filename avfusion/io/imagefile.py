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
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if img is None:
        raise LogFormatError(f"{path}: not a decodable image (corrupt or truncated)")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return img
