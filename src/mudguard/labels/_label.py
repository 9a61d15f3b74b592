"""Printable device labels for manufacturers: the RFC 9238 QR code plus the same facts in text.

A label is drawn once as a layout (text lines and the QR payload) and rendered
twice: SVG for print shops, PNG for everything else. Every string on a label is
escaped for XML; nothing is rendered from a template.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, ImageDraw, ImageFont

from mudguard.discovery.qr import QrRecord, build_qr, parse_qr
from mudguard.labels._image import qr_svg_path, qr_symbol

_WIDTH = 700  # SVG user units / PNG pixels at scale 1
_QR_MODULE = 4
_MARGIN = 16
_URL_WRAP = 38


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelLayout:
    """What a label shows: a title, detail lines, the URL lines and the QR payload."""

    title: str
    lines: tuple[str, ...]
    url_lines: tuple[str, ...]
    payload: str


def layout(record: QrRecord) -> LabelLayout:
    """Lay out the label for ``record`` (validates it through ``build_qr``)."""
    payload = build_qr(record)
    record = parse_qr(payload)  # the normalised form (MAC with colons)
    title = record.product or record.model or "IoT device"
    lines = []
    if record.company:
        lines.append(f"Made by {record.company}")
    if record.model:
        lines.append(f"Model {record.model}")
    if record.mac:
        lines.append(f"MAC {record.mac}")
    lines.append("Network use described by (MUD, RFC 8520):")
    url_lines = tuple(textwrap.wrap(record.mud_url, _URL_WRAP, break_long_words=True,
                                    break_on_hyphens=False)) or (record.mud_url,)
    return LabelLayout(title=title, lines=tuple(lines), url_lines=url_lines, payload=payload)


def label_svg(record: QrRecord) -> str:
    """A printable SVG label: QR code on the left, name, maker, model and MUD URL on the right."""
    lay = layout(record)
    path, side_modules = qr_svg_path(lay.payload, scale=_QR_MODULE, border=4)
    qr_side = side_modules * _QR_MODULE
    height = max(qr_side, _text_height(lay)) + 2 * _MARGIN
    x = qr_side + 2 * _MARGIN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" role="img" aria-label={quoteattr(lay.title)}>',
        f'<rect width="{_WIDTH}" height="{height}" fill="#fff" stroke="#000" stroke-width="2"/>',
        f'<g transform="translate({_MARGIN} {_MARGIN})"><path transform="scale({_QR_MODULE})" '
        f'stroke="#000" d="{path}"/></g>',
        '<g font-family="DejaVu Sans, Arial, sans-serif" fill="#000">',
    ]
    y = _MARGIN + 30
    out.append(f'<text x="{x}" y="{y}" font-size="26" font-weight="bold">'
               f'{escape(lay.title)}</text>')
    y += 36
    for line in lay.lines:
        out.append(f'<text x="{x}" y="{y}" font-size="18">{escape(line)}</text>')
        y += 26
    for line in lay.url_lines:
        out.append(f'<text x="{x}" y="{y}" font-size="16" font-family="DejaVu Sans Mono, '
                   f'monospace">{escape(line)}</text>')
        y += 22
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


def label_png(record: QrRecord, *, scale: int = 2) -> bytes:
    """The same label as a PNG image (``scale`` 2 prints at about 200 dpi on 90 mm)."""
    lay = layout(record)
    symbol = qr_symbol(lay.payload)
    qr_side = int(symbol.symbol_size(scale=_QR_MODULE, border=4)[0])
    height = max(qr_side, _text_height(lay)) + 2 * _MARGIN
    image = Image.new("L", (_WIDTH * scale, height * scale), 255)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, _WIDTH * scale - 1, height * scale - 1), outline=0, width=2 * scale)
    qr_buffer = io.BytesIO()
    symbol.save(qr_buffer, kind="png", scale=_QR_MODULE * scale, border=4)
    image.paste(Image.open(qr_buffer).convert("L"), (_MARGIN * scale, _MARGIN * scale))
    x = (qr_side + 2 * _MARGIN) * scale
    y = _MARGIN + 8
    draw.text((x, y * scale), lay.title, fill=0, font=_font(26 * scale))
    y += 36
    for line in lay.lines:
        draw.text((x, y * scale), line, fill=0, font=_font(18 * scale))
        y += 26
    for line in lay.url_lines:
        draw.text((x, y * scale), line, fill=0, font=_font(16 * scale))
        y += 22
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _text_height(lay: LabelLayout) -> int:
    return 40 + 26 * len(lay.lines) + 22 * len(lay.url_lines)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)
