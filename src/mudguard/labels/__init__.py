"""Device labels (RFC 9238): QR images, printable SVG/PNG labels, and reading labels from photos."""

from mudguard.labels._image import (
    MAX_IMAGE_BYTES,
    qr_png,
    read_label,
    read_qr_texts,
)
from mudguard.labels._label import LabelLayout, label_png, label_svg, layout

__all__ = [
    "MAX_IMAGE_BYTES",
    "LabelLayout",
    "label_png",
    "label_svg",
    "layout",
    "qr_png",
    "read_label",
    "read_qr_texts",
]
