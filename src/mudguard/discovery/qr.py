"""RFC 9238 QR labels: parse and build the MUD URL record a device's label carries.

Theory of operation: RFC 9238 ("Loading Manufacturer Usage Description (MUD) URLs
from QR Codes", https://www.rfc-editor.org/rfc/rfc9238) reuses the ISO/IEC 15434
envelope with format ``06`` (ANSI MH10.8.2 data identifiers)::

    "[)>" RS "06" GS <DI><data> GS <DI><data> ... RS EOT

RS is 0x1E, GS is 0x1D and EOT is 0x04. Each data element starts with its
four-character data identifier. This module knows ``B000`` (company name),
``B001`` (product name), ``B002`` (model number), ``M180`` (MUD URL) and
``M06C`` (MAC address); other well-formed elements are kept, untouched, in
``QrRecord.other`` so nothing a label says is silently lost.

Pure: text in, ``QrRecord`` out, and back. Everything on a label is hostile until
checked: the payload is bounded in size, control characters other than the
three separators are refused, the MUD URL must be ``https`` (RFC 8520 §3.1), and
a MAC must be six octets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mudguard.devices._model import MacError, device_mac
from mudguard.errors import RemoteInputError

RS = "\x1e"
GS = "\x1d"
EOT = "\x04"
HEADER = "[)>" + RS + "06" + GS
TRAILER = RS + EOT

# A QR code holds at most 2953 bytes (version 40, level L); anything longer did not
# come from a real label.
MAX_PAYLOAD_CHARS = 2953
MAX_URL_CHARS = 1024  # hard cap, well above any real MUD URL
MAX_TEXT_CHARS = 256

DI_COMPANY = "B000"
DI_PRODUCT = "B001"
DI_MODEL = "B002"
DI_MUD_URL = "M180"
DI_MAC = "M06C"

_DI = re.compile(r"^[0-9A-Z]{4}")
_MAC_DIGITS = re.compile(r"^[0-9a-f]{12}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class QrError(RemoteInputError):
    """A label payload that is not a usable RFC 9238 record.

    ``key`` is stable for UIs; ``reason`` says what was wrong, without echoing
    more than a short, sanitised prefix of the payload.
    """

    key = "qr_invalid"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class QrRecord:
    """What an RFC 9238 label says about a device."""

    mud_url: str
    company: str | None = None
    product: str | None = None
    model: str | None = None
    mac: str | None = None  # lower-case, colon separated
    other: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"mud_url": self.mud_url, "company": self.company, "product": self.product,
                "model": self.model, "mac": self.mac, "other": dict(self.other)}


def parse_qr(payload: str | bytes) -> QrRecord:
    """Parse the text a QR reader returned from a MUD label.

    Args:
        payload: the decoded QR text (bytes are decoded as UTF-8).

    Returns:
        The record, with the MAC normalised to ``aa:bb:cc:dd:ee:ff``.

    Raises:
        QrError: with ``key`` one of ``qr_too_long``, ``qr_not_text``,
            ``qr_no_header``, ``qr_no_trailer``, ``qr_control_chars``,
            ``qr_bad_element``, ``qr_duplicate``, ``qr_no_mud_url``,
            ``qr_bad_mud_url``, ``qr_bad_mac``, ``qr_bad_text``.
    """
    text = _as_text(payload)
    if not text.startswith(HEADER):
        raise QrError("qr_no_header", "not an RFC 9238 label: the text does not start "
                      "with the '[)>' RS '06' GS header")
    body = text[len(HEADER):]
    # Some readers drop the final EOT; the RS that closes the record must be there.
    if body.endswith(TRAILER):
        body = body[:-len(TRAILER)]
    elif body.endswith(RS):
        body = body[:-1]
    else:
        raise QrError("qr_no_trailer", "the label record does not end with RS EOT")
    if _CONTROL.search(body.replace(GS, "")):
        raise QrError("qr_control_chars", "the label contains control characters")
    elements = _split_elements(body)
    return _record(elements)


def build_qr(record: QrRecord) -> str:
    """The RFC 9238 payload for ``record`` (header, elements in a fixed order, RS EOT).

    Raises:
        QrError: if a field would not survive ``parse_qr`` (bad URL or MAC,
            control characters, too long).
    """
    parts: list[str] = []
    for di, value in ((DI_COMPANY, record.company), (DI_PRODUCT, record.product),
                      (DI_MODEL, record.model)):
        if value is not None:
            parts.append(di + _check_text(di, value))
    parts.append(DI_MUD_URL + _check_url(record.mud_url))
    if record.mac is not None:
        parts.append(DI_MAC + _normalise_mac(record.mac).replace(":", "").upper())
    for di, value in sorted(record.other.items()):
        if not _DI.fullmatch(di) or di in _KNOWN:
            raise QrError("qr_bad_element", f"cannot add data identifier {di[:8]!r}")
        parts.append(di + _check_text(di, value))
    payload = HEADER + GS.join(parts) + TRAILER
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise QrError("qr_too_long", "the record does not fit in one QR code")
    return payload


_KNOWN = frozenset({DI_COMPANY, DI_PRODUCT, DI_MODEL, DI_MUD_URL, DI_MAC})


def _as_text(payload: str | bytes) -> str:
    if isinstance(payload, bytes):
        if len(payload) > MAX_PAYLOAD_CHARS * 4:
            raise QrError("qr_too_long", f"the label is longer than {MAX_PAYLOAD_CHARS} "
                          "characters")
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise QrError("qr_not_text", "the label is not UTF-8 text") from exc
    if not isinstance(payload, str):
        raise QrError("qr_not_text", "the label is not text")
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise QrError("qr_too_long", f"the label is longer than {MAX_PAYLOAD_CHARS} characters")
    return payload


def _split_elements(body: str) -> dict[str, str]:
    elements: dict[str, str] = {}
    for index, element in enumerate(body.split(GS)):
        if not _DI.match(element):
            raise QrError("qr_bad_element", f"element {index + 1} does not start with a "
                          "four-character data identifier")
        di, value = element[:4], element[4:]
        if di in elements:
            raise QrError("qr_duplicate", f"data identifier {di} appears twice")
        elements[di] = value
    return elements


def _record(elements: dict[str, str]) -> QrRecord:
    if DI_MUD_URL not in elements:
        raise QrError("qr_no_mud_url", "the label has no MUD URL (data identifier M180)")
    mac = elements.get(DI_MAC)
    return QrRecord(
        mud_url=_check_url(elements[DI_MUD_URL]),
        company=_optional_text(DI_COMPANY, elements.get(DI_COMPANY)),
        product=_optional_text(DI_PRODUCT, elements.get(DI_PRODUCT)),
        model=_optional_text(DI_MODEL, elements.get(DI_MODEL)),
        mac=_normalise_mac(mac) if mac is not None else None,
        other={di: _check_text(di, v) for di, v in elements.items() if di not in _KNOWN},
    )


def _optional_text(di: str, value: str | None) -> str | None:
    return None if value is None else _check_text(di, value)


def _check_text(di: str, value: str) -> str:
    # isprintable also refuses format characters (U+202E RIGHT-TO-LEFT OVERRIDE, zero
    # widths) with which a label could make the owner read another maker or model.
    if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS or not value.isprintable():
        raise QrError("qr_bad_text", f"the {di} field must be printable text of at most "
                      f"{MAX_TEXT_CHARS} characters")
    return value


def _check_url(url: str) -> str:
    """RFC 8520 §3.1: "The MUD URL MUST use the "https" scheme"."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS or \
            not url.isprintable() or any(c.isspace() for c in url):
        raise QrError("qr_bad_mud_url", "the MUD URL is empty, too long or contains "
                      "spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise QrError("qr_bad_mud_url", "the MUD URL is not a valid URL") from exc
    if parts.scheme.lower() != "https":
        raise QrError("qr_bad_mud_url", "the MUD URL must use https")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise QrError("qr_bad_mud_url", "the MUD URL must name a host and carry no "
                      "user name or password")
    del port
    return url


def _normalise_mac(text: str) -> str:
    digits = re.sub(r"[:\-.]", "", text.strip().lower()) if isinstance(text, str) else ""
    if len(text) > 32 or not _MAC_DIGITS.match(digits):
        raise QrError("qr_bad_mac", "the MAC address on the label is not six octets")
    try:  # all-zero, broadcast, multicast: a label naming one names no device
        return device_mac(digits)
    except MacError as exc:
        raise QrError("qr_bad_mac", f"the MAC address on the label: {exc}") from None


__all__ = [
    "DI_COMPANY",
    "DI_MAC",
    "DI_MODEL",
    "DI_MUD_URL",
    "DI_PRODUCT",
    "EOT",
    "GS",
    "HEADER",
    "MAX_PAYLOAD_CHARS",
    "RS",
    "TRAILER",
    "QrError",
    "QrRecord",
    "build_qr",
    "parse_qr",
]
