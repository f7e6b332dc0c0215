"""``read_image_file``: colour → RGB, grey and 16-bit unchanged, corrupt files named."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avfusion.errors import LogFormatError
from avfusion.io.imagefile import _jpeg_frame, read_image_file


def _write(path: Path, ext: str, pixels: np.ndarray, *params: int) -> Path:
    ok, enc = cv2.imencode(ext, pixels, list(params))
    assert ok
    path.write_bytes(enc.tobytes())
    return path


def test_colour_jpeg_is_rgb_and_equals_the_two_step_decode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's BGR order
    bgr[8:40, 8:56] = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    path = _write(tmp_path / "c.jpg", ".jpg", bgr, cv2.IMWRITE_JPEG_QUALITY, 95)
    raw = np.fromfile(path, np.uint8)
    assert _jpeg_frame(raw) == (0xC0, 8, 3)
    img = read_image_file(path)
    reference = cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img, reference)
    assert (
        img.shape == (48, 64, 3) and abs(int(img[2, 2, 2]) - 200) <= 8
    )  # blue is channel 2 (JPEG: chroma subsampled)


def test_grey_jpeg_png16_and_png_rgba(tmp_path: Path) -> None:
    grey = _write(tmp_path / "g.jpg", ".jpg", np.full((10, 12), 90, np.uint8))
    assert _jpeg_frame(np.fromfile(grey, np.uint8)) == (0xC0, 8, 1)
    assert read_image_file(grey).shape == (10, 12)
    counts = np.arange(10 * 12, dtype=np.uint16).reshape(10, 12) * 500
    png16 = _write(tmp_path / "t.png", ".png", counts)
    assert _jpeg_frame(np.fromfile(png16, np.uint8)) == (0, 0, 0)
    np.testing.assert_array_equal(read_image_file(png16), counts)
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, 128
    rgb = read_image_file(_write(tmp_path / "a.png", ".png", bgra))
    assert rgb.shape == (4, 5, 3) and rgb[0, 0].tolist() == [0, 0, 255]


def test_bad_image_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="missing"):
        read_image_file(tmp_path / "nope.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(LogFormatError, match=r"empty\.jpg: not a decodable image"):
        read_image_file(empty)
    good = _write(tmp_path / "c.jpg", ".jpg", np.full((32, 32, 3), 60, np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:40])  # header only: truncated before the image data
    with pytest.raises(LogFormatError, match=r"cut\.jpg: not a decodable image"):
        read_image_file(cut)
    assert _jpeg_frame(np.frombuffer(b"\xff\xd8\xff", np.uint8)) == (0, 0, 0)


def test_colour_jpeg_fast_path_matches_opencv_and_names_truncation(tmp_path: Path) -> None:
    """Colour JPEGs go through libjpeg-turbo via simplejpeg: the same pixels as OpenCV's
    decode (both libjpeg-turbo, exact IDCT), progressive included; a file cut inside its image
    data is an error naming the file instead of rows padded with grey."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:90, 0:160]
    bgr = np.stack([(x * 1.5) % 256, (y * 2.5) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    bgr[20:60, 30:120] = rng.integers(0, 255, (40, 90, 3), dtype=np.uint8)
    for name, params in (
        ("base.jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
        ("prog.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        ("444.jpg", [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
    ):
        path = _write(tmp_path / name, ".jpg", bgr, *params)
        raw = np.fromfile(path, np.uint8)
        assert _jpeg_frame(raw)[1:] == (8, 3)
        reference = cv2.cvtColor(cv2.imdecode(raw, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image_file(path), reference, err_msg=name)
    whole = (tmp_path / "base.jpg").read_bytes()
    cut = tmp_path / "half.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(LogFormatError, match=r"half\.jpg: JPEG is truncated"):
        read_image_file(cut)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(whole[:400] + bytes(rng.integers(0, 255, 2000, dtype=np.uint8)))
    with pytest.raises(LogFormatError, match=r"garbage\.jpg"):
        read_image_file(garbage)
