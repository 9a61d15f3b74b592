"""QR images: make them with segno, read them with zxing-cpp.

Images arrive from the owner's phone camera or an upload, so they are hostile:
the byte size and the pixel count are bounded before anything is decoded
(Pillow's own decompression-bomb guard is tightened to our limit), and a
picture that holds no RFC 9238 label is a clear error, not an empty result.
"""

from __future__ import annotations

import io
import warnings

import segno
import zxingcpp
from PIL import Image, UnidentifiedImageError

from mudguard.discovery.qr import QrError, QrRecord, build_qr, parse_qr

MAX_IMAGE_BYTES = 12 * 1024 * 1024  # a phone photo is 2-6 MB
MAX_IMAGE_PIXELS = 40_000_000  # 40 megapixels: any phone camera, no decompression bombs


def qr_symbol(payload: str) -> segno.QRCode:
    """The QR symbol for ``payload`` (error correction M: labels get scuffed)."""
    return segno.make(payload, error="m", micro=False, boost_error=False)


def qr_png(payload: str, *, scale: int = 8, border: int = 4) -> bytes:
    """A PNG image of the QR code for ``payload``."""
    out = io.BytesIO()
    qr_symbol(payload).save(out, kind="png", scale=scale, border=border)
    return out.getvalue()


def qr_svg_path(payload: str, *, scale: float = 4, border: int = 4) -> tuple[str, int]:
    """The QR code as an SVG ``<path d=…>`` string and its side in user units.

    The path draws dark modules as horizontal strokes of width ``scale``.
    """
    out = io.BytesIO()
    symbol = qr_symbol(payload)
    symbol.save(out, kind="svg", scale=scale, border=border, xmldecl=False, svgns=True,
                nl=False, omitsize=False)
    text = out.getvalue().decode("ascii")
    start = text.index(' d="') + 4
    path = text[start:text.index('"', start)]
    side = int(symbol.symbol_size(scale=1, border=border)[0])
    return path, side


def read_qr_texts(image: bytes) -> list[str]:
    """Every QR code's raw text found in an image (PNG, JPEG, GIF, WebP, BMP).

    Raises:
        QrError: ``image_too_large`` or ``image_unreadable``.
    """
    if len(image) > MAX_IMAGE_BYTES:
        raise QrError("image_too_large", f"the image is larger than "
                      f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(image))
            width, height = picture.size
            if width * height > MAX_IMAGE_PIXELS:
                raise QrError("image_too_large", "the image has too many pixels")
            picture.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise QrError("image_unreadable", "the file is not an image this gateway can "
                      "read") from exc
    gray = picture.convert("L")
    only_qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    # Plain: the separators come back as RS/GS/EOT bytes, not as display pictures.
    found = zxingcpp.read_barcodes(gray, formats=only_qr, text_mode=zxingcpp.TextMode.Plain)
    return [barcode.text for barcode in found]


def read_label(image: bytes) -> QrRecord:
    """The RFC 9238 record of the label in ``image``.

    When the picture holds several QR codes, the first one that parses as an
    RFC 9238 label wins (a box often has a marketing QR code beside it).

    Raises:
        QrError: ``image_no_qr`` when no QR code is visible, the parse error of
            the first code when none is an RFC 9238 label, or the image errors of
            ``read_qr_texts``.
    """
    texts = read_qr_texts(image)
    if not texts:
        raise QrError("image_no_qr", "no QR code was found in the picture")
    first_error: QrError | None = None
    for text in texts:
        try:
            return parse_qr(text)
        except QrError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def label_png_for(record: QrRecord) -> bytes:
    """A bare QR image of ``record`` (for tests and for a label without text)."""
    return qr_png(build_qr(record))
