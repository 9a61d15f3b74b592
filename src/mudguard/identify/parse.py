"""Pure parsers: one packet's payload in, the identifying facts it states out.

Every parser takes bytes that came off the wire (hostile by assumption) and
returns a list of ``(field, value)`` pairs, never raising: a malformed payload
gives an empty list. Values are cleaned by ``clean_text`` (control characters
escaped, length capped), so nothing a device sends reaches a terminal or a
JSON consumer unescaped.

Fields (the knowledge base's rules name them):
``hostname``, ``vendor_class``, ``prl`` (DHCPv4 options 12/81, 60, 55);
``mdns_service``, ``mdns_instance``, ``mdns_txt``, ``mdns_host`` (announcements:
PTR, SRV, TXT, A/AAAA),
``mdns_query`` (service types the device looks for);
``ssdp_server``, ``ssdp_usn``, ``ssdp_type``; ``lldp_name``, ``lldp_desc``;
``dns_name`` (DNS questions), ``sni`` (TLS ClientHello server_name),
``cert_org``, ``cert_cn`` (server certificates seen in clear),
``user_agent``, ``http_host``; ``upnp_device_type``, ``upnp_manufacturer``,
``upnp_model``, ``upnp_model_description``, ``upnp_friendly_name``,
``upnp_manufacturer_url`` (a UPnP device description the device served over HTTP);
``device_maker``, ``device_model``, ``device_description``, ``device_name``,
``device_type`` (what a device's own local API answers: HNAP, TP-Link Kasa);
``http_server`` (the Server header of the device's own HTTP answers).
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Callable, Iterator

MAX_TEXT = 128  # characters kept of any value a device sends
# written out, never shown as is: they reorder, hide or fake the text around them
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
MAX_ITEMS = 32  # values kept of one packet
DHCP_COOKIE = b"\x63\x82\x53\x63"
HTTP_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"DELETE ", b"PATCH ")
Fact = tuple[str, str]
CertReader = Callable[[bytes], "tuple[list[str], list[str]]"]


def clean_text(raw: bytes | str, limit: int = MAX_TEXT) -> str:
    """Printable text: bytes decoded as UTF-8 (bad bytes replaced), control, format
    (bidi marks and overrides, zero widths, tags), separator, surrogate, private and
    unassigned characters written as ``\\xNN``/``\\uNNNN``/``\\UNNNNNNNN``, at most
    ``limit`` characters (a cut value ends with ``…``)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text[: limit * 2]
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif unicodedata.category(ch) in HIDDEN_CATEGORIES:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    joined = "".join(out)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def _fact(field: str, raw: bytes | str) -> Fact | None:
    value = clean_text(raw).strip()
    return (field, value) if value else None


def _facts(pairs: Iterator[Fact | None]) -> list[Fact]:
    seen: list[Fact] = []
    for pair in pairs:
        if pair is not None and pair not in seen:
            seen.append(pair)
            if len(seen) >= MAX_ITEMS:
                break
    return seen


# --- DHCPv4 (RFC 2131/2132) ---------------------------------------------------------

def parse_dhcp(payload: bytes) -> list[Fact]:
    """Facts of a DHCPv4 client message (BOOTREQUEST): hostname (option 12, or the
    name of option 81), vendor class (60), parameter request list (55) as
    comma-separated decimal codes. A server's message gives nothing."""
    if len(payload) < 240 or payload[0] != 1 or payload[236:240] != DHCP_COOKIE:
        return []
    return _facts(_dhcp_options(payload))


def _dhcp_options(payload: bytes) -> Iterator[Fact | None]:
    pos = 240
    for _ in range(255):
        if pos >= len(payload):
            return
        code = payload[pos]
        if code == 255:
            return
        if code == 0:
            pos += 1
            continue
        if pos + 2 > len(payload):
            return
        length = payload[pos + 1]
        value = payload[pos + 2:pos + 2 + length]
        pos += 2 + length
        if code == 12:
            yield _fact("hostname", value)
        elif code == 81 and len(value) > 3:
            yield _fact("hostname", _fqdn_option_name(value[3:]))
        elif code == 60:
            yield _fact("vendor_class", value)
        elif code == 55 and value:
            yield ("prl", ",".join(str(b) for b in value[:64]))


def _fqdn_option_name(raw: bytes) -> bytes:
    """Option 81's name: wire-format labels (flag E) or ASCII; first label kept."""
    if raw and raw[0] < 64 and len(raw) > raw[0]:
        return raw[1:1 + raw[0]]
    return raw.split(b".")[0]


# --- DNS names (RFC 1035 §4.1.4) and mDNS/DNS-SD (RFC 6762/6763) --------------------

def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """The name at ``pos`` (compression followed, bounded) and the offset after it."""
    labels: list[str] = []
    end = -1
    for _ in range(64):
        if pos >= len(msg):
            raise ValueError("name runs past the message")
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 2 > len(msg):
                raise ValueError("truncated pointer")
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length & 0xC0:
            raise ValueError("bad label type")
        label = msg[pos + 1:pos + 1 + length]
        if len(label) != length:
            raise ValueError("truncated label")
        labels.append(label.decode("utf-8", "replace"))
        pos += 1 + length
    else:
        raise ValueError("too many labels or a pointer loop")
    name = ".".join(labels)
    if len(name) > 255:
        raise ValueError("name longer than 255 octets")
    return name, (end if end >= 0 else pos)


def _dns_header(payload: bytes) -> tuple[int, int, int, int, int] | None:
    if len(payload) < 12:
        return None
    _ident, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", payload)
    return flags, qd, an, ns, ar


def parse_dns_query(payload: bytes) -> list[Fact]:
    """The names a DNS query asks for (``dns_name``), lower case, no trailing dot."""
    header = _dns_header(payload)
    if header is None or header[0] & 0x8000:
        return []
    out: list[Fact | None] = []
    pos = 12
    try:
        for _ in range(min(header[1], 8)):
            name, pos = _read_name(payload, pos)
            pos += 4
            out.append(_fact("dns_name", name.lower().rstrip(".")))
    except ValueError:
        pass
    return _facts(iter(out))


def parse_mdns(payload: bytes) -> list[Fact]:
    """Facts of an mDNS message: from a response (an announcement) the service
    types (``mdns_service``), instance names (``mdns_instance``), TXT strings
    (``mdns_txt``) and host names (``mdns_host``); from a query the service types
    asked for (``mdns_query``)."""
    header = _dns_header(payload)
    if header is None:
        return []
    flags, qd, an, ns, ar = header
    out: list[Fact | None] = []
    pos = 12
    try:
        for _ in range(min(qd, 32)):
            name, pos = _read_name(payload, pos)
            pos += 4
            if not flags & 0x8000 and "._" in "." + name:
                out.append(_fact("mdns_query", _service_type(name)))
        if flags & 0x8000:
            for _ in range(min(an + ns + ar, 64)):
                pos = _mdns_record(payload, pos, out)
    except (ValueError, struct.error):
        pass
    return _facts(iter(out))


def _service_type(name: str) -> str:
    """``_hap._tcp`` out of ``Foo._hap._tcp.local`` or ``_hap._tcp.local``."""
    labels = name.lower().rstrip(".").split(".")
    for i, label in enumerate(labels):
        if label in ("_tcp", "_udp") and i > 0:
            return f"{labels[i - 1]}.{label}"
    return name.lower().rstrip(".")


def _local_host(name: str) -> str:
    """``Roku-1234`` out of ``Roku-1234.local``; a reverse-lookup name gives nothing."""
    host = name.rstrip(".")
    if host.lower().endswith((".arpa",)):
        return ""
    return host[:-6] if host.lower().endswith(".local") else host


def _mdns_record(msg: bytes, pos: int, out: list[Fact | None]) -> int:
    name, pos = _read_name(msg, pos)
    if pos + 10 > len(msg):
        raise ValueError("truncated record")
    rtype, _cls, _ttl, rdlen = (int(v) for v in struct.unpack_from("!HHIH", msg, pos))
    pos += 10
    rdata_end = pos + rdlen
    if rdata_end > len(msg):
        raise ValueError("truncated rdata")
    if rtype == 12 and "._" in "." + name:  # PTR: service type → instance
        target, _ = _read_name(msg, pos)
        if not name.lower().startswith("_services._dns-sd"):
            out.append(_fact("mdns_service", _service_type(name)))
            instance = target.split("._")[0] if "._" in target else ""
            out.append(_fact("mdns_instance", instance))
    elif rtype == 33 and "._" in name:  # SRV: the instance's own name, and its host
        out.append(_fact("mdns_service", _service_type(name)))
        out.append(_fact("mdns_instance", name.split("._")[0]))
        if rdlen > 6:
            target, _ = _read_name(msg, pos + 6)
            out.append(_fact("mdns_host", _local_host(target)))
    elif rtype in (1, 28):  # A/AAAA: the device's own host name
        out.append(_fact("mdns_host", _local_host(name)))
    elif rtype == 16:  # TXT: length-prefixed strings
        txt_pos = pos
        for _ in range(32):
            if txt_pos >= rdata_end:
                break
            length = msg[txt_pos]
            chunk = msg[txt_pos + 1:min(txt_pos + 1 + length, rdata_end)]
            txt_pos += 1 + length
            if b"=" in chunk:
                out.append(_fact("mdns_txt", chunk))
    return rdata_end


# --- SSDP (UPnP Device Architecture 2.0 §1) and HTTP requests -----------------------

def _headers(payload: bytes) -> tuple[bytes, dict[str, bytes]]:
    head = payload[:4096].split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n") if b"\r\n" in head else head.split(b"\n")
    headers: dict[str, bytes] = {}
    for line in lines[1:64]:
        key, sep, value = line.partition(b":")
        if sep:
            headers.setdefault(key.strip().lower().decode("latin-1"), value.strip())
    return lines[0], headers


def parse_ssdp(payload: bytes) -> list[Fact]:
    """Facts of an SSDP announcement (NOTIFY) or search answer (``HTTP/1.1 200``):
    SERVER (``ssdp_server``), USN (``ssdp_usn``) and NT/ST (``ssdp_type``). An
    M-SEARCH (the device looking for others) gives only its ST (``ssdp_search``)."""
    start, headers = _headers(payload)
    if start.startswith(b"M-SEARCH"):
        return _facts(iter([_fact("ssdp_search", headers.get("st", b""))]))
    if not (start.startswith(b"NOTIFY") or start.startswith(b"HTTP/1.1 200")):
        return []
    return _facts(iter([
        _fact("ssdp_server", headers.get("server", b"")),
        _fact("ssdp_usn", headers.get("usn", b"")),
        _fact("ssdp_type", headers.get("nt", headers.get("st", b""))),
    ]))


def parse_http_request(payload: bytes) -> list[Fact]:
    """User-Agent (``user_agent``) and Host (``http_host``, port dropped) of a
    clear-text HTTP request."""
    if not payload.startswith(HTTP_METHODS):
        return []
    _start, headers = _headers(payload)
    host = headers.get("host", b"").rsplit(b":", 1)[0] if headers.get("host") else b""
    return _facts(iter([_fact("user_agent", headers.get("user-agent", b"")),
                        _fact("http_host", host.lower())]))


Elements = tuple[tuple[str, str], ...]
UPNP_ELEMENTS: Elements = (
    ("deviceType", "upnp_device_type"), ("manufacturer", "upnp_manufacturer"),
    ("modelName", "upnp_model"), ("modelDescription", "upnp_model_description"),
    ("friendlyName", "upnp_friendly_name"),
    ("manufacturerURL", "upnp_manufacturer_url"))
UPNP_WINDOW = 8192  # bytes of a response searched


def parse_http_response(payload: bytes) -> list[Fact]:
    """The ``Server`` header of an HTTP answer the device sent (``http_server``: the
    web server it runs, often named after its maker or product line), with what a
    UPnP description or HNAP answer in it says (``parse_upnp_description``)."""
    if not payload.startswith(b"HTTP/1."):
        return []
    _start, headers = _headers(payload)
    server = _fact("http_server", headers.get("server", b""))
    described = parse_upnp_description(payload)
    return _facts(iter([server, *described]))


HNAP_ELEMENTS: Elements = (
    ("VendorName", "device_maker"), ("ModelName", "device_model"),
    ("ModelDescription", "device_description"), ("DeviceName", "device_name"))
HNAP_NAMESPACE = b"purenetworks.com/HNAP1"


def parse_upnp_description(payload: bytes) -> list[Fact]:
    """The root device's deviceType, manufacturer, modelName, modelDescription,
    friendlyName and manufacturerURL of a UPnP device description (UPnP Device
    Architecture 2.0 §2.3) in an HTTP response the device sent: the first of each
    element, searched in the first 8 KB with plain substring search (no XML parser
    on hostile bytes; entities other than ``&amp;`` are left as they are). An HNAP
    answer (D-Link's and others' local SOAP API, ``GetDeviceSettingsResponse``) gives
    ``device_maker``, ``device_model``, ``device_description`` and ``device_name``."""
    if not payload.startswith(b"HTTP/1."):
        return []
    window = payload[:UPNP_WINDOW]
    if b"urn:schemas-upnp-org:device-1-0" in window:
        elements = UPNP_ELEMENTS
    elif HNAP_NAMESPACE in window:
        elements = HNAP_ELEMENTS
    else:
        return []
    out: list[Fact | None] = []
    for element, field in elements:
        start = window.find(b"<" + element.encode() + b">")
        if start < 0:
            continue
        start += len(element) + 2
        end = window.find(b"</", start)
        if end < 0 or end - start > 256:
            continue
        out.append(_fact(field, window[start:end].replace(b"&amp;", b"&")))
    return _facts(iter(out))


# --- TP-Link Kasa local protocol (port 9999) ----------------------------------------

KASA_KEY = 171  # the protocol's initial "autokey" XOR key
KASA_WINDOW = 4096  # bytes of an answer decoded
KASA_FIELDS = (("model", "device_model"), ("mic_type", "device_type"), ("type", "device_type"),
               ("dev_name", "device_description"))


def kasa_decode(payload: bytes, *, stream: bool) -> bytes:
    """The clear text of a Kasa message: each byte XORed with the previous cipher byte
    (the first with 171); over TCP a 4-byte length comes first."""
    data = payload[4:] if stream else payload
    key, out = KASA_KEY, bytearray()
    for byte in data[:KASA_WINDOW]:
        out.append(key ^ byte)
        key = byte
    return bytes(out)


def parse_kasa(payload: bytes, *, stream: bool) -> list[Fact]:
    """Model (``device_model``), type (``device_type``, e.g. ``IOT.SMARTPLUGSWITCH``)
    and product name (``device_description``) of a Kasa device's ``get_sysinfo``
    answer sent from its port 9999 (the app asks during set-up and at each start).
    Plain substring search on the decoded text, so a truncated answer still gives
    what it holds; anything that does not decode to a JSON object gives nothing."""
    data = payload[4:] if stream else payload
    if len(data) < 2 or data[0] ^ KASA_KEY != 0x7B or data[1] ^ data[0] != 0x22:
        return []  # not '{"': two XORs, before decoding (a flood on 9999 costs little)
    text = kasa_decode(data, stream=False)
    if b"sysinfo" not in text:
        return []
    out: list[Fact | None] = []
    for key, field in KASA_FIELDS:
        value = _json_string(text, key)
        if value is not None:
            out.append(_fact(field, value))
    return _facts(iter(out))


def _json_string(text: bytes, key: str) -> bytes | None:
    """The first ``"key": "value"`` string value in ``text`` (≤ 64 bytes, no escapes),
    found by substring search."""
    start = text.find(b'"' + key.encode() + b'"')
    if start < 0:
        return None
    rest = text[start + len(key) + 2:start + len(key) + 80].lstrip()
    if not rest.startswith(b":"):
        return None
    rest = rest[1:].lstrip()
    if not rest.startswith(b'"'):
        return None
    end = rest.find(b'"', 1)
    return rest[1:end] if 0 < end <= 65 and b"\\" not in rest[1:end] else None


# --- LLDP (IEEE 802.1AB §8.5) ------------------------------------------------------

def parse_lldp(payload: bytes) -> list[Fact]:
    """System name (TLV 5, ``lldp_name``) and description (TLV 6, ``lldp_desc``) of
    an LLDPDU (the bytes after the ethertype)."""
    out: list[Fact | None] = []
    pos = 0
    for _ in range(64):
        if pos + 2 > len(payload):
            break
        header, = struct.unpack_from("!H", payload, pos)
        kind, length = header >> 9, header & 0x1FF
        value = payload[pos + 2:pos + 2 + length]
        pos += 2 + length
        if kind == 0 or len(value) != length:
            break
        if kind == 5:
            out.append(_fact("lldp_name", value))
        elif kind == 6:
            out.append(_fact("lldp_desc", value))
    return _facts(iter(out))


# --- TLS (RFC 5246 §7.4, RFC 6066 §3) ----------------------------------------------

def tls_handshakes(stream: bytes) -> Iterator[tuple[int, bytes]]:
    """``(type, body)`` of each complete handshake message in a stream of TLS
    records (the start of one direction of a connection). Stops at the first
    record that is not a handshake or is cut."""
    data = bytearray()
    pos = 0
    for _ in range(64):
        if pos + 5 > len(stream) or stream[pos] != 0x16 or stream[pos + 1] != 3:
            break
        length = struct.unpack_from("!H", stream, pos + 3)[0]
        data += stream[pos + 5:pos + 5 + length]
        pos += 5 + length
    hpos = 0
    for _ in range(16):
        if hpos + 4 > len(data):
            return
        htype = data[hpos]
        hlen = int.from_bytes(data[hpos + 1:hpos + 4], "big")
        if hpos + 4 + hlen > len(data):
            return
        yield htype, bytes(data[hpos + 4:hpos + 4 + hlen])
        hpos += 4 + hlen


def parse_client_hello(payload: bytes) -> list[Fact]:
    """The server name (``sni``) a TLS ClientHello asks for."""
    for htype, body in tls_handshakes(payload):
        if htype == 1:
            name = _sni(body)
            return [("sni", name)] if name else []
    return []


def _sni(body: bytes) -> str:
    try:
        pos = 34  # version, random
        pos += 1 + body[pos]  # session id
        pos += 2 + struct.unpack_from("!H", body, pos)[0]  # cipher suites
        pos += 1 + body[pos]  # compression methods
        ext_end = pos + 2 + struct.unpack_from("!H", body, pos)[0]
        pos += 2
        for _ in range(64):
            if pos + 4 > min(ext_end, len(body)):
                return ""
            etype, elen = struct.unpack_from("!HH", body, pos)
            if etype == 0 and elen >= 5:
                nlen = struct.unpack_from("!H", body, pos + 7)[0]
                return clean_text(body[pos + 9:pos + 9 + nlen]).lower().rstrip(".")
            pos += 4 + elen
    except (IndexError, struct.error):
        return ""
    return ""


def parse_server_certificates(stream: bytes, load_org: CertReader | None = None) -> list[Fact]:
    """Organisation (``cert_org``) and common name (``cert_cn``) of the first
    certificate of a TLS 1.2 Certificate message in the server's stream.
    ``load_org`` turns DER bytes into ``(organisations, common names)``
    (default ``certificate_names``)."""
    load_org = load_org or certificate_names
    for htype, body in tls_handshakes(stream):
        if htype != 11 or len(body) < 6:
            continue
        first_len = int.from_bytes(body[3:6], "big")
        der = body[6:6 + first_len]
        if len(der) != first_len:
            return []
        orgs, names = load_org(der)
        return _facts(iter([_fact("cert_org", o) for o in orgs[:4]]
                           + [_fact("cert_cn", n.lower()) for n in names[:4]]))
    return []


def certificate_names(der: bytes) -> tuple[list[str], list[str]]:
    """Subject organisations and common names of a DER certificate; empty lists for
    one that does not parse."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        subject = x509.load_der_x509_certificate(der).subject
        orgs = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        names = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except (ValueError, TypeError):
        return [], []
    return orgs, names
