"""Adapter: read mudguard's tables back from the kernel over nfnetlink (for reconcile).

``nft -j list ruleset`` through libnftables takes seconds on a home of 1,000 devices
(it resolves every rule's set references and prints everything); reconcile needs
only chain names, each rule's chain and comment, and the entries of the dispatch
maps and main-table sets. Those come from four kinds of dumps (``NFT_MSG_GETCHAIN``,
``GETRULE``, ``GETSET``, ``GETSETELEM``), returned in the shape of nft's JSON
listing so ``Enforcer`` reads either.
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from collections.abc import Collection
from typing import Any

from mudguard.enforce.nfnetlink import (
    NfnetlinkError,
    NfnetlinkSocket,
    attr_str,
    iter_attrs,
    parse_attrs,
)

NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM = 4, 7, 10, 13
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK = 1, 3, 4
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_USERDATA = 1, 2, 7
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_LEN = 1, 2, 3, 5
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA = 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFT_SET_ANONYMOUS, NFT_SET_MAP = 0x1, 0x8
NFT_JUMP = -3
_MAX = 1_000_000  # bound on the messages of one dump


def _text(raw: bytes | None) -> str:
    return (raw or b"").split(b"\0", 1)[0].decode("ascii", "replace")


def _u32(attrs: dict[int, bytes], kind: int) -> int:
    """A big-endian 32-bit attribute, 0 if absent."""
    return int(struct.unpack("!I", attrs.get(kind, b"\0\0\0\0")[:4])[0])


def _comment(udata: bytes | None) -> str | None:
    """The rule comment in libnftnl's userdata TLVs (type 0)."""
    data = udata or b""
    offset = 0
    while offset + 2 <= len(data):
        kind, length = data[offset], data[offset + 1]
        value = data[offset + 2: offset + 2 + length]
        if kind == 0:
            return value.split(b"\0", 1)[0].decode("utf-8", "replace")
        offset += 2 + length
    return None


def key_value(raw: bytes) -> str | dict[str, list[str]]:
    """An element key as nft's JSON listing gives it: a MAC (6 bytes), an address (4/16
    bytes), or a ``MAC . address`` binding (``bind4``/``bind6``: the MAC padded to 8
    bytes) as ``{"concat": [MAC, address]}``."""
    if len(raw) in BINDING_KEY_LENGTHS:
        return {"concat": [_scalar_text(raw[:6]), _scalar_text(raw[8:])]}
    return _scalar_text(raw)


def _scalar_text(raw: bytes) -> str:
    if len(raw) == 6:
        return ":".join(f"{b:02x}" for b in raw)
    if len(raw) in (4, 16):
        return str(ipaddress.ip_address(raw))
    return raw.hex()


BINDING_KEY_LENGTHS = (12, 24)  # ether_addr (padded to 8) . ipv4_addr / ipv6_addr


def _elements(sock: NfnetlinkSocket, table: str, name: str) -> list[Any]:
    body = attr_str(NFTA_SET_ELEM_LIST_TABLE, table) + attr_str(NFTA_SET_ELEM_LIST_SET, name)
    out: list[Any] = []
    for payload in sock.dump(NFT_MSG_GETSETELEM, body, _MAX):
        elements = parse_attrs(payload).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
        for _kind, raw in iter_attrs(elements):
            elem = parse_attrs(raw)
            key = key_value(parse_attrs(elem.get(NFTA_SET_ELEM_KEY, b"")).get(NFTA_DATA_VALUE,
                                                                              b""))
            data = parse_attrs(elem.get(NFTA_SET_ELEM_DATA, b""))
            if NFTA_DATA_VERDICT not in data:
                out.append(key)
                continue
            verdict = parse_attrs(data[NFTA_DATA_VERDICT])
            (code,) = struct.unpack("!i", verdict.get(NFTA_VERDICT_CODE, b"\0\0\0\0")[:4])
            target = _text(verdict.get(NFTA_VERDICT_CHAIN))
            out.append([key, {"jump": {"target": target}} if code == NFT_JUMP else {"drop": None}])
    return out


def read_tables(sock: NfnetlinkSocket, tables: Collection[str]) -> list[dict[str, Any]]:
    """Chains, rules (chain and comment), maps and plain sets (with their elements) of
    the ``inet`` tables named, as nft's JSON listing items."""
    items: list[dict[str, Any]] = []
    for payload in sock.dump(NFT_MSG_GETCHAIN, b"", _MAX):
        a = parse_attrs(payload)
        table = _text(a.get(NFTA_CHAIN_TABLE))
        if table in tables:
            chain: dict[str, Any] = {"family": "inet", "table": table,
                                     "name": _text(a.get(NFTA_CHAIN_NAME))}
            if NFTA_CHAIN_HOOK in a:
                chain["hook"] = "base"
            items.append({"chain": chain})
    for payload in sock.dump(NFT_MSG_GETRULE, b"", _MAX):
        a = parse_attrs(payload)
        table = _text(a.get(NFTA_RULE_TABLE))
        if table in tables:
            rule: dict[str, Any] = {"family": "inet", "table": table,
                                    "chain": _text(a.get(NFTA_RULE_CHAIN))}
            comment = _comment(a.get(NFTA_RULE_USERDATA))
            if comment is not None:
                rule["comment"] = comment
            items.append({"rule": rule})
    for payload in sock.dump(NFT_MSG_GETSET, b"", _MAX):
        a = parse_attrs(payload)
        table = _text(a.get(NFTA_SET_TABLE))
        flags = _u32(a, NFTA_SET_FLAGS)
        if table not in tables or flags & NFT_SET_ANONYMOUS:
            continue
        name = _text(a.get(NFTA_SET_NAME))
        kind = "map" if flags & NFT_SET_MAP else "set"
        body: dict[str, Any] = {"family": "inet", "table": table, "name": name}
        # Not the DNS pair sets (8 or 32-byte keys): reconcile never needs their contents.
        if kind == "map" or _u32(a, NFTA_SET_KEY_LEN) in (4, 6, 16, *BINDING_KEY_LENGTHS):
            body["elem"] = _elements(sock, table, name)
        items.append({kind: body})
    return items


def _pair(raw: bytes) -> tuple[str, str] | None:
    """A DNS pair set's key (device address . remote address), or None if not one."""
    if len(raw) not in (8, 32):
        return None
    half = len(raw) // 2
    return str(ipaddress.ip_address(raw[:half])), str(ipaddress.ip_address(raw[half:]))


def _dump_elements(sock: NfnetlinkSocket, table: str, name: str) -> list[bytes]:
    """The element-list messages of the set ``name`` of the ``inet`` table ``table``;
    none for a set that does not exist."""
    body = attr_str(NFTA_SET_ELEM_LIST_TABLE, table) + attr_str(NFTA_SET_ELEM_LIST_SET, name)
    try:
        return sock.dump(NFT_MSG_GETSETELEM, body, _MAX)
    except NfnetlinkError as exc:
        if exc.code != errno.ENOENT:
            raise
        return []


def read_pairs(sock: NfnetlinkSocket, table: str,
               names: Collection[str]) -> dict[str, list[tuple[str, str]]]:
    """The (device address, remote address) elements of the DNS pair sets ``names`` in
    the ``inet`` table ``table`` (a set that does not exist reads as empty)."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        found: list[tuple[str, str]] = []
        for payload in _dump_elements(sock, table, name):
            elements = parse_attrs(payload).get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
            for _kind, raw in iter_attrs(elements):
                key = parse_attrs(parse_attrs(raw).get(NFTA_SET_ELEM_KEY, b"")).get(
                    NFTA_DATA_VALUE, b"")
                pair = _pair(key)
                if pair is not None:
                    found.append(pair)
        pairs[name] = found
    return pairs


RawElement = tuple[bytes, bytes, bytes]
"""An element as the kernel holds it: key, key end (or empty), data (or empty)."""

NFTA_SET_ELEM_KEY_END = 10


_HDR = struct.Struct("=HH")


def _first_value(data: bytes, start: int, stop: int) -> bytes:
    """The payload of the first attribute in data[start:stop] (a NFTA_DATA_VALUE)."""
    if start + 4 > stop:
        return b""
    length, _kind = _HDR.unpack_from(data, start)
    return data[start + 4: start + max(length, 4)]


def raw_elements(payload: bytes) -> tuple[str, list[RawElement]]:
    """The set name and elements of one set-element message body (a dump's answer, or a
    message a batch would send: both read the same way, so they compare as bytes).

    A hand-rolled walk: a reconcile reads tens of thousands of elements."""
    attrs = parse_attrs(payload)
    name = _text(attrs.get(NFTA_SET_ELEM_LIST_SET))
    out: list[RawElement] = []
    data = attrs.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
    unpack = _HDR.unpack_from
    size = len(data)
    offset = 0
    while offset + 4 <= size:
        length, _kind = unpack(data, offset)
        if length < 4:
            break
        stop = offset + length
        inner = offset + 4
        key = end = value = b""
        while inner + 4 <= stop:
            alen, akind = unpack(data, inner)
            if alen < 4:
                break
            akind &= 0x3FFF
            if akind == NFTA_SET_ELEM_KEY:
                key = _first_value(data, inner + 4, inner + alen)
            elif akind == NFTA_SET_ELEM_KEY_END:
                end = _first_value(data, inner + 4, inner + alen)
            elif akind == NFTA_SET_ELEM_DATA:
                nested_data = parse_attrs(data[inner + 4: inner + alen])
                if NFTA_DATA_VERDICT in nested_data:
                    verdict = parse_attrs(nested_data[NFTA_DATA_VERDICT])
                    value = verdict.get(NFTA_VERDICT_CODE, b"")[:4] + verdict.get(
                        NFTA_VERDICT_CHAIN, b"").rstrip(b"\0")
                else:
                    value = nested_data.get(NFTA_DATA_VALUE, b"")
            inner += (alen + 3) & ~3
        out.append((key, end, value))
        offset += (length + 3) & ~3
    return name, out


def read_raw_elements(sock: NfnetlinkSocket, table: str,
                      names: Collection[str]) -> dict[str, set[RawElement]]:
    """Every element of the sets ``names`` of ``table``, one dump per set (a set that does
    not exist reads as empty)."""
    found: dict[str, set[RawElement]] = {}
    for name in names:
        bucket = found.setdefault(name, set())
        for payload in _dump_elements(sock, table, name):
            bucket.update(raw_elements(payload)[1])
    return found


def read_rules(sock: NfnetlinkSocket, table: str) -> list[tuple[str, str | None]]:
    """(chain, comment) of every rule of the ``inet`` table ``table``."""
    out: list[tuple[str, str | None]] = []
    body = attr_str(NFTA_RULE_TABLE, table)
    for payload in sock.dump(NFT_MSG_GETRULE, body, _MAX):
        a = parse_attrs(payload)
        if _text(a.get(NFTA_RULE_TABLE)) == table:
            out.append((_text(a.get(NFTA_RULE_CHAIN)), _comment(a.get(NFTA_RULE_USERDATA))))
    return out
