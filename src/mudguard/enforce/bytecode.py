"""Translate libnftables JSON commands to nf_tables netlink messages (pure: no I/O).

This is the part of nft's work that a device update needs, done without nft's
ruleset cache (see ``nfnetlink.py`` for why): ``add chain`` (no hook), ``flush
chain``, ``delete chain``, ``add rule``, ``add set`` and ``add``/``delete element``
in the ``inet`` family, with the expressions ``policy/_nft.py`` writes. Anything
else raises ``Unsupported`` and the caller hands the batch to libnftables, which
is always correct, only slower.

The bytecode is the one nft 1.0.6 generates for the same JSON (checked in
``tests/netns/test_enforce_bytecode.py``: both are installed and listed back, and
the listings must be equal): protocol dependencies (``meta nfproto`` before an
``ip``/``ip6`` field, ``meta l4proto`` before a transport field, ``meta iiftype``
before an Ethernet field) are added once per rule unless a match already
established them; byte-aligned prefixes load fewer bytes, others are masked;
``==`` ranges are two comparisons, ``!=`` ranges a ``range`` expression;
anonymous sets are created in the same batch and bound by id; interval sets get
nft's element layout (a leading end marker at zero, each interval as its start
and its end + 1 flagged as an end).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mudguard.enforce.nfnetlink import (
    NLM_F_APPEND,
    NLM_F_CREATE,
    Message,
    attr,
    attr_str,
    attr_u32,
    attr_u64,
    nested,
)

NftCommand = dict[str, Any]

# nf_tables.h message types and attributes
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWSET, NFT_MSG_DELSET = 9, 11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA = 1, 2, 4, 7
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE, NFTA_SET_KEY_LEN = 1, 2, 3, 4, 5
NFTA_SET_DESC, NFTA_SET_ID, NFTA_SET_TIMEOUT, NFTA_SET_USERDATA = 9, 10, 11, 13
NFTA_SET_DESC_SIZE = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET = 1, 2
NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET_ID = 3, 4
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_FLAGS = 1, 2, 3
NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION = 4, 5
NFTA_SET_ELEM_KEY_END = 10
NFTA_DATA_VALUE, NFTA_DATA_VERDICT = 1, 2
NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2
NFT_SET_ANONYMOUS, NFT_SET_CONSTANT, NFT_SET_INTERVAL, NFT_SET_TIMEOUT = 0x1, 0x2, 0x4, 0x10
NFT_SET_ELEM_INTERVAL_END = 0x1
NFT_REG_VERDICT, NFT_REG_1, NFT_REG32_00 = 0, 1, 8
NFT_PAYLOAD_LL, NFT_PAYLOAD_NETWORK, NFT_PAYLOAD_TRANSPORT = 0, 1, 2
NFT_CMP = {"==": 0, "!=": 1, "<": 2, "<=": 3, ">": 4, ">=": 5}
NFT_RANGE_NEQ = 1
NFT_LOOKUP_F_INV = 1
NFT_LIMIT_F_INV = 1
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
ARPHRD_ETHER = 1
MAX_COMMENT = 128  # NFT_USERDATA_MAXLEN is 256; nft caps comments at 128 bytes

VERDICTS: Final = {"accept": 1, "drop": 0, "continue": -1, "jump": -3, "goto": -4,
                   "return": -5}
_META_KEYS: Final = {"protocol": 1, "iifname": 6, "oifname": 7, "iiftype": 8, "nfproto": 15,
                     "l4proto": 16}
_CT_KEYS: Final = {"state": 0, "direction": 1}
_CT_STATES: Final = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
_TCP_FLAGS: Final = {"fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64,
                     "cwr": 128}
_L4PROTOS: Final = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58}
_NFPROTOS: Final = {"ipv4": NFPROTO_IPV4, "ipv6": NFPROTO_IPV6}
_PER: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}

# nft datatype ids (datatype.h) for set key types; a concatenation packs them 6 bits each
_TYPE_IDS: Final = {"ipv4_addr": 7, "ipv6_addr": 8, "ether_addr": 9, "inet_proto": 12,
                    "inet_service": 13}
_TYPE_LENS: Final = {"ipv4_addr": 4, "ipv6_addr": 16, "ether_addr": 6, "inet_proto": 1,
                     "inet_service": 2}


class Unsupported(Exception):
    """A command or expression this translator does not handle (libnftables will)."""


@dataclass(frozen=True, slots=True)
class _Field:
    """A value a rule loads: where from, how long, and how its constants are written."""

    kind: str  # payload | meta | ct
    base: int = 0
    offset: int = 0
    length: int = 0
    key: int = 0
    value_type: str = "int"  # how to encode right-hand constants
    needs: tuple[str, ...] = ()  # protocol context the load depends on


_P = NFT_PAYLOAD_NETWORK
_T = NFT_PAYLOAD_TRANSPORT
_PAYLOADS: Final = {
    ("ether", "saddr"): _Field("payload", NFT_PAYLOAD_LL, 6, 6, value_type="ether",
                               needs=("ll",)),
    ("ether", "daddr"): _Field("payload", NFT_PAYLOAD_LL, 0, 6, value_type="ether",
                               needs=("ll",)),
    ("ip", "saddr"): _Field("payload", _P, 12, 4, value_type="ipv4", needs=("ip",)),
    ("ip", "daddr"): _Field("payload", _P, 16, 4, value_type="ipv4", needs=("ip",)),
    ("ip6", "saddr"): _Field("payload", _P, 8, 16, value_type="ipv6", needs=("ip6",)),
    ("ip6", "daddr"): _Field("payload", _P, 24, 16, value_type="ipv6", needs=("ip6",)),
    ("tcp", "sport"): _Field("payload", _T, 0, 2, value_type="be", needs=("tcp",)),
    ("tcp", "dport"): _Field("payload", _T, 2, 2, value_type="be", needs=("tcp",)),
    ("tcp", "flags"): _Field("payload", _T, 13, 1, value_type="tcp_flags", needs=("tcp",)),
    ("udp", "sport"): _Field("payload", _T, 0, 2, value_type="be", needs=("udp",)),
    ("udp", "dport"): _Field("payload", _T, 2, 2, value_type="be", needs=("udp",)),
    ("icmp", "type"): _Field("payload", _T, 0, 1, value_type="be", needs=("ip", "icmp")),
    ("icmp", "code"): _Field("payload", _T, 1, 1, value_type="be", needs=("ip", "icmp")),
    ("icmpv6", "type"): _Field("payload", _T, 0, 1, value_type="be", needs=("ip6", "icmpv6")),
    ("icmpv6", "code"): _Field("payload", _T, 1, 1, value_type="be", needs=("ip6", "icmpv6")),
}
_METAS: Final = {
    "nfproto": _Field("meta", key=15, length=1, value_type="nfproto"),
    "l4proto": _Field("meta", key=16, length=1, value_type="l4proto"),
    "protocol": _Field("meta", key=1, length=2, value_type="be"),
    "iiftype": _Field("meta", key=8, length=2, value_type="host"),
    "iifname": _Field("meta", key=6, length=16, value_type="ifname"),
    "oifname": _Field("meta", key=7, length=16, value_type="ifname"),
}
_CTS: Final = {
    "state": _Field("ct", key=0, length=4, value_type="ct_state"),
    "direction": _Field("ct", key=1, length=1, value_type="ct_direction"),
}
# The dependency each context name stands for: (meta key, value)
_DEPENDENCIES: Final = {
    "ll": ("iiftype", ARPHRD_ETHER), "ip": ("nfproto", NFPROTO_IPV4),
    "ip6": ("nfproto", NFPROTO_IPV6), "tcp": ("l4proto", 6), "udp": ("l4proto", 17),
    "icmp": ("l4proto", 1), "icmpv6": ("l4proto", 58),
}
_LAYER: Final = {"ll": "ll", "ip": "net", "ip6": "net", "tcp": "l4", "udp": "l4",
                 "icmp": "l4", "icmpv6": "l4"}


# -- values ---------------------------------------------------------------------------------------


def _int_value(value: Any, names: dict[str, int] | None = None) -> int:
    if isinstance(value, bool):
        raise Unsupported(f"boolean value {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and names is not None and value in names:
        return names[value]
    raise Unsupported(f"value {value!r}")


def encode_value(value: Any, value_type: str, length: int) -> bytes:
    """A right-hand constant as the kernel compares it (``length`` bytes)."""
    if value_type in ("ipv4", "ipv6"):
        if not isinstance(value, str):
            raise Unsupported(f"address {value!r}")
        address = ipaddress.ip_address(value)
        if address.version != (4 if value_type == "ipv4" else 6):
            raise Unsupported(f"{value} is not {value_type}")
        return address.packed
    if value_type == "ether":
        return _ether(value)
    if value_type == "ifname":
        if not isinstance(value, str) or len(value) >= 16 or "*" in value:
            raise Unsupported(f"interface name {value!r}")
        return value.encode("ascii").ljust(16, b"\0")
    if value_type == "ct_state":
        return struct.pack("=I", _bits(value, _CT_STATES))
    if value_type == "tcp_flags":
        return _bits(value, _TCP_FLAGS).to_bytes(1, "big")
    names = {"nfproto": _NFPROTOS, "l4proto": _L4PROTOS,
             "ct_direction": {"original": 0, "reply": 1}}.get(value_type)
    number = _int_value(value, names)
    order: Literal["little", "big"] = sys.byteorder if value_type == "host" else "big"
    if not 0 <= number < 1 << (8 * length):
        raise Unsupported(f"{number} does not fit {length} bytes")
    return number.to_bytes(length, order)


def _bits(value: Any, names: dict[str, int]) -> int:
    items = value if isinstance(value, list) else [value]
    total = 0
    for item in items:
        total |= _int_value(item, names)
    return total


def _ether(value: Any) -> bytes:
    if not isinstance(value, str):
        raise Unsupported(f"MAC {value!r}")
    parts = value.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise Unsupported(f"MAC {value!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError as exc:
        raise Unsupported(f"MAC {value!r}") from exc


def _register(position: int) -> int:
    """nft's register for a 32-bit slot offset (``netlink_put_register``)."""
    if position % 4 == 0:
        return NFT_REG_1 + position // 4
    return NFT_REG32_00 + position


def _slots(length: int) -> int:
    return (length + 3) // 4


# -- expressions ----------------------------------------------------------------------------------


def _expr(name: str, *attrs: bytes) -> bytes:
    return nested(NFTA_LIST_ELEM, attr_str(NFTA_EXPR_NAME, name), nested(NFTA_EXPR_DATA, *attrs))


def _data(value: bytes) -> bytes:
    return attr(NFTA_DATA_VALUE, value)


# The leaf builders are pure and a home repeats the same few thousand of them: cached.
@functools.lru_cache(maxsize=8192)
def _cmp(op: str, value: bytes, reg: int = NFT_REG_1) -> bytes:
    return _expr("cmp", attr_u32(1, reg), attr_u32(2, NFT_CMP[op]), nested(3, _data(value)))


@functools.lru_cache(maxsize=1024)
def _load(f: _Field, reg: int, length: int | None = None) -> bytes:
    if f.kind == "payload":
        return _expr("payload", attr_u32(1, reg), attr_u32(2, f.base), attr_u32(3, f.offset),
                     attr_u32(4, f.length if length is None else length))
    if f.kind == "meta":
        return _expr("meta", attr_u32(1, reg), attr_u32(2, f.key))
    return _expr("ct", attr_u32(1, reg), attr_u32(2, f.key))


@functools.lru_cache(maxsize=1024)
def _bitwise(length: int, mask: bytes, reg: int = NFT_REG_1) -> bytes:
    return _expr("bitwise", attr_u32(1, reg), attr_u32(2, reg), attr_u32(3, length),
                 nested(4, _data(mask)), nested(5, _data(b"\0" * length)))


@functools.lru_cache(maxsize=4096)
def verdict_data(verdict: str, chain: str | None = None) -> bytes:
    """``NFTA_DATA_VERDICT`` for ``accept``/``drop``/``return``/``jump chain``…"""
    code = attr(NFTA_VERDICT_CODE, struct.pack("!i", VERDICTS[verdict]))
    if chain is not None:
        code += attr_str(NFTA_VERDICT_CHAIN, chain)
    return nested(NFTA_DATA_VERDICT, code)


@dataclass
class _Batch:
    """The state shared by a batch's messages: anonymous set ids, the table."""

    table: str
    origin: int = 0
    next_set_id: int = 1
    messages: list[Message] = field(default_factory=list)
    # Key types of named sets whose elements need them (a concatenation with ranges;
    # a mark map): set name -> (key types, interval, data type or None).
    set_types: dict[str, SetLayout] = field(default_factory=dict)

    def add(self, kind: int, flags: int, body: bytes) -> None:
        self.messages.append(Message(kind, flags, body, self.origin))

    def set_id(self) -> int:
        ident = self.next_set_id
        self.next_set_id += 1
        return ident


@dataclass
class _Rule:
    """One rule being linearised: its expressions and its protocol context."""

    batch: _Batch
    exprs: list[bytes] = field(default_factory=list)
    context: dict[str, str] = field(default_factory=dict)  # layer -> established protocol
    # The last two expressions, if they are "payload == constant": (base, offset, value)
    last_eq: tuple[int, int, bytes] | None = None

    def append(self, *exprs: bytes) -> None:
        self.exprs += exprs
        self.last_eq = None

    def payload_equals(self, f: _Field, value: bytes) -> None:
        """``payload == value``, merged with an adjacent one as nft does (one load)."""
        last = self.last_eq
        if (last is not None and last[0] == f.base and last[1] + len(last[2]) == f.offset
                and len(last[2]) + len(value) <= 16):
            del self.exprs[-2:]
            merged = _Field("payload", f.base, last[1], len(last[2]) + len(value))
            self.exprs += [_load(merged, NFT_REG_1), _cmp("==", last[2] + value)]
            self.last_eq = (f.base, last[1], last[2] + value)
            return
        self.exprs += [_load(f, NFT_REG_1), _cmp("==", value)]
        self.last_eq = (f.base, f.offset, value)

    def depend(self, needs: tuple[str, ...]) -> None:
        for need in needs:
            layer = _LAYER[need]
            if self.context.get(layer) == need:
                continue
            if layer in self.context:
                raise Unsupported(f"{need} after {self.context[layer]} in one rule")
            key, value = _DEPENDENCIES[need]
            meta = _METAS[key]
            self.append(_load(meta, NFT_REG_1),
                        _cmp("==", encode_value(value, meta.value_type, meta.length)))
            self.context[layer] = need

    def note_explicit(self, f: _Field, op: str, right: Any) -> None:
        """An explicit ``meta nfproto``/``meta l4proto`` equality sets the context."""
        if f.kind != "meta" or op != "==" or f.key not in (15, 16):
            return
        try:
            number = _int_value(right, _NFPROTOS if f.key == 15 else _L4PROTOS)
        except Unsupported:
            return
        names = ({NFPROTO_IPV4: "ip", NFPROTO_IPV6: "ip6"} if f.key == 15
                 else {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"})
        if number in names:
            self.context[_LAYER[names[number]]] = names[number]


def _field_of(left: Any) -> _Field:
    if not isinstance(left, dict) or len(left) != 1:
        raise Unsupported(f"left-hand side {left!r}")
    (kind, body), = left.items()
    if kind == "payload" and isinstance(body, dict):
        found = _PAYLOADS.get((str(body.get("protocol")), str(body.get("field"))))
    elif kind == "meta" and isinstance(body, dict):
        found = _METAS.get(body.get("key", ""))
    elif kind == "ct" and isinstance(body, dict) and set(body) == {"key"}:
        found = _CTS.get(body.get("key", ""))
    else:
        found = None
    if found is None:
        raise Unsupported(f"left-hand side {left!r}")
    return found


def _match(rule: _Rule, match: Any) -> None:
    if not isinstance(match, dict):
        raise Unsupported(f"match {match!r}")
    op, left, right = match.get("op", "=="), match.get("left"), match.get("right")
    if op == "in":
        op = "=="
    if op not in NFT_CMP:
        raise Unsupported(f"operator {op!r}")
    if isinstance(left, dict) and "concat" in left:
        _concat_lookup(rule, left["concat"], op, right)
        return
    if isinstance(left, dict) and "&" in left:
        _masked(rule, left["&"], op, right)
        return
    f = _field_of(left)
    rule.depend(f.needs)
    if isinstance(right, str) and right.startswith("@"):
        rule.append(_load(f, NFT_REG_1))
        rule.append(_lookup(right[1:], None, op))
        return
    if isinstance(right, dict) and "set" in right:
        rule.append(_load(f, NFT_REG_1))
        name, ident = _anonymous_set(rule.batch, f, right["set"])
        rule.append(_lookup(name, ident, op))
        return
    if isinstance(right, dict) and "prefix" in right:
        _prefix(rule, f, op, right["prefix"])
        return
    if isinstance(right, dict) and "range" in right:
        _range(rule, f, op, right["range"])
        return
    if f.value_type == "ct_state" and isinstance(right, list):
        rule.append(_load(f, NFT_REG_1))
        rule.append(_bitwise(4, encode_value(right, f.value_type, 4)))
        rule.append(_cmp("!=" if op == "==" else "==", b"\0" * 4))
        return
    value = encode_value(right, f.value_type, f.length)
    if f.kind == "payload" and op == "==":
        rule.payload_equals(f, value)
    else:
        rule.append(_load(f, NFT_REG_1), _cmp(op, value))
    rule.note_explicit(f, op, right)


@functools.lru_cache(maxsize=4096)
def _lookup(name: str, ident: int | None, op: str) -> bytes:
    if op not in ("==", "!="):
        raise Unsupported(f"set lookup with {op!r}")
    attrs = [attr_str(1, name), attr_u32(2, NFT_REG_1)]
    if ident is not None:
        attrs.append(attr_u32(4, ident))
    attrs.append(attr_u32(5, NFT_LOOKUP_F_INV if op == "!=" else 0))
    return _expr("lookup", *attrs)


def _concat_lookup(rule: _Rule, parts: Any, op: str, right: Any) -> None:
    if not isinstance(parts, list) or not (isinstance(right, str) and right.startswith("@")):
        raise Unsupported("a concatenation is only looked up in a named set here")
    fields = [_field_of(p) for p in parts]
    for f in fields:
        rule.depend(f.needs)
    position = 0
    for f in fields:
        rule.append(_load(f, _register(position)))
        position += _slots(f.length)
    rule.append(_lookup(right[1:], None, op))


def _masked(rule: _Rule, operands: Any, op: str, right: Any) -> None:
    if not (isinstance(operands, list) and len(operands) == 2):
        raise Unsupported(f"binary operation {operands!r}")
    f = _field_of(operands[0])
    if f.value_type != "tcp_flags" or op not in ("==", "!="):
        raise Unsupported(f"mask on {operands[0]!r}")
    rule.depend(f.needs)
    rule.append(_load(f, NFT_REG_1))
    rule.append(_bitwise(f.length, encode_value(operands[1], f.value_type, f.length)))
    rule.append(_cmp(op, encode_value(right, f.value_type, f.length)))


def _network(f: _Field, prefix: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if f.value_type not in ("ipv4", "ipv6") or not isinstance(prefix, dict):
        raise Unsupported(f"prefix {prefix!r}")
    net = ipaddress.ip_network(f"{prefix.get('addr')}/{prefix.get('len')}", strict=True)
    if net.version != (4 if f.value_type == "ipv4" else 6):
        raise Unsupported(f"{net} is not {f.value_type}")
    return net


def _prefix(rule: _Rule, f: _Field, op: str, prefix: Any) -> None:
    if op not in ("==", "!="):
        raise Unsupported(f"prefix with {op!r}")
    net = _network(f, prefix)
    packed = net.network_address.packed
    if net.prefixlen % 8 == 0 and net.prefixlen > 0:
        size = net.prefixlen // 8
        rule.append(_load(f, NFT_REG_1, size))
        rule.append(_cmp(op, packed[:size]))
        return
    rule.append(_load(f, NFT_REG_1))
    rule.append(_bitwise(f.length, net.netmask.packed))
    rule.append(_cmp(op, packed))


def _range(rule: _Rule, f: _Field, op: str, bounds: Any) -> None:
    if not (isinstance(bounds, list) and len(bounds) == 2) or op not in ("==", "!="):
        raise Unsupported(f"range {bounds!r} with {op!r}")
    low = encode_value(bounds[0], f.value_type, f.length)
    high = encode_value(bounds[1], f.value_type, f.length)
    rule.append(_load(f, NFT_REG_1))
    if op == "==":
        rule.append(_cmp(">=", low), _cmp("<=", high))
    else:
        rule.append(_expr("range", attr_u32(1, NFT_REG_1), attr_u32(2, NFT_RANGE_NEQ),
                                nested(3, _data(low)), nested(4, _data(high))))


# -- anonymous and named sets ---------------------------------------------------------------------


def _intervals(f: _Field, items: list[Any]) -> list[tuple[int, int]] | None:
    """Merged closed intervals of ``items`` as integers, or None if all are single values."""
    spans: list[tuple[int, int]] = []
    interval = False
    for item in items:
        if isinstance(item, dict) and "prefix" in item:
            net = _network(f, item["prefix"])
            spans.append((int(net.network_address), int(net.broadcast_address)))
            interval = True
        elif isinstance(item, dict) and "range" in item and len(item["range"]) == 2:
            low, high = (int.from_bytes(encode_value(v, f.value_type, f.length), "big")
                         for v in item["range"])
            spans.append((low, high))
            interval = True
        else:
            value = int.from_bytes(encode_value(item, f.value_type, f.length), "big")
            spans.append((value, value))
    if not interval:
        return None
    merged: list[tuple[int, int]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _set_type(f: _Field) -> tuple[int, bytes]:
    """(NFTA_SET_KEY_TYPE, key byte order userdata) for a field's values."""
    names = {"ipv4": "ipv4_addr", "ipv6": "ipv6_addr", "ether": "ether_addr",
             "l4proto": "inet_proto", "be": "inet_service" if f.length == 2 else None,
             "nfproto": None}
    if f.value_type not in names:
        raise Unsupported(f"a set of {f.value_type}")
    name = names[f.value_type]
    # No name: nft uses the field's own type (e.g. icmpv6_type); integer (0) is fine.
    type_id = _TYPE_IDS[name] if name else 0
    big_endian = f.value_type in ("ipv4", "ipv6", "ether", "be")
    return type_id, _udata_byteorder(2 if big_endian else 1)


def _udata_byteorder(order: int) -> bytes:
    return bytes([0, 4]) + struct.pack("=I", order)  # NFTNL_UDATA_SET_KEYBYTEORDER


def _anonymous_set(batch: _Batch, f: _Field, items: Any) -> tuple[str, int]:
    if not isinstance(items, list) or not items:
        raise Unsupported(f"set {items!r}")
    ident = batch.set_id()
    type_id, udata = _set_type(f)
    spans = _intervals(f, items)
    flags = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | (NFT_SET_INTERVAL if spans is not None else 0)
    elements: list[bytes] = []
    width = f.length
    if spans is None:
        keys = sorted({encode_value(item, f.value_type, width) for item in items})
        elements = [_element(key) for key in keys]
        size = len(keys)
    else:
        if spans[0][0] != 0:
            elements.append(_element(bytes(width), NFT_SET_ELEM_INTERVAL_END))
        for low, high in spans:
            elements.append(_element(low.to_bytes(width, "big")))
            if high + 1 < 1 << (8 * width):
                elements.append(_element((high + 1).to_bytes(width, "big"),
                                         NFT_SET_ELEM_INTERVAL_END))
        size = len(spans)
    name = "__set%d"
    batch.add(NFT_MSG_NEWSET, NLM_F_CREATE, b"".join([
        attr_str(NFTA_SET_TABLE, batch.table), attr_str(NFTA_SET_NAME, name),
        attr_u32(NFTA_SET_FLAGS, flags), attr_u32(NFTA_SET_KEY_TYPE, type_id),
        attr_u32(NFTA_SET_KEY_LEN, width), attr_u32(NFTA_SET_ID, ident),
        nested(NFTA_SET_DESC, attr_u32(NFTA_SET_DESC_SIZE, size)),
        attr(NFTA_SET_USERDATA, udata)]))
    batch.add(NFT_MSG_NEWSETELEM, NLM_F_CREATE, b"".join([
        attr_str(NFTA_SET_ELEM_LIST_TABLE, batch.table), attr_str(NFTA_SET_ELEM_LIST_SET, name),
        attr_u32(NFTA_SET_ELEM_LIST_SET_ID, ident),
        nested(NFTA_SET_ELEM_LIST_ELEMENTS, *elements)]))
    return name, ident


def _element(key: bytes, flags: int = 0, *extra: bytes) -> bytes:
    attrs = [nested(NFTA_SET_ELEM_KEY, _data(key))]
    if flags:
        attrs.append(attr_u32(NFTA_SET_ELEM_FLAGS, flags))
    return nested(NFTA_LIST_ELEM, *attrs, *extra)


def _key_types(spec: Any) -> list[str]:
    names = spec if isinstance(spec, list) else [spec]
    if not names or not all(isinstance(n, str) and n in _TYPE_IDS for n in names):
        raise Unsupported(f"set type {spec!r}")
    return names


def _add_set(batch: _Batch, body: dict[str, Any]) -> None:
    allowed = {"family", "table", "name", "type", "flags", "timeout"}
    if set(body) - allowed or body.get("family") != "inet" or "map" in body:
        raise Unsupported(f"set {body.get('name')!r}")
    types = _key_types(body.get("type"))
    flags_in = body.get("flags", [])
    flags_in = flags_in if isinstance(flags_in, list) else [flags_in]
    if set(flags_in) - {"timeout"}:
        raise Unsupported(f"set flags {flags_in!r}")
    flags = NFT_SET_TIMEOUT if "timeout" in flags_in else 0
    lengths = [_TYPE_LENS[t] for t in types]
    type_id = 0
    for t in types:
        type_id = (type_id << 6) | _TYPE_IDS[t]
    key_len = sum(4 * _slots(n) for n in lengths) if len(types) > 1 else lengths[0]
    attrs = [attr_str(NFTA_SET_TABLE, _table(body)), attr_str(NFTA_SET_NAME, _name(body)),
             attr_u32(NFTA_SET_FLAGS, flags), attr_u32(NFTA_SET_KEY_TYPE, type_id),
             attr_u32(NFTA_SET_KEY_LEN, key_len), attr_u32(NFTA_SET_ID, batch.set_id())]
    if "timeout" in body:
        attrs.append(attr_u64(NFTA_SET_TIMEOUT, 1000 * _int_value(body["timeout"])))
    big = types[0] in ("ipv4_addr", "ipv6_addr", "ether_addr", "inet_service")
    attrs.append(attr(NFTA_SET_USERDATA, _udata_byteorder(2 if big else 1)))
    batch.add(NFT_MSG_NEWSET, NLM_F_CREATE, b"".join(attrs))


_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")


def _guess_key(value: Any) -> bytes:
    """An element key from its text: a MAC, an address, or a concatenation of those."""
    if isinstance(value, dict) and "concat" in value and isinstance(value["concat"], list):
        parts = [_guess_key(v) for v in value["concat"]]
        return b"".join(p.ljust(4 * _slots(len(p)), b"\0") for p in parts)
    if isinstance(value, str) and _MAC.fullmatch(value):  # not "2001:db8:1::1:100"
        return _ether(value)
    if isinstance(value, str):
        # inet_pton first: ten times faster than ipaddress, which matters for the
        # thousands of DNS pair elements a moved address may take with it.
        for family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                return socket.inet_pton(family, value)
        try:
            return ipaddress.ip_address(value).packed
        except ValueError as exc:
            raise Unsupported(f"element {value!r}") from exc
    raise Unsupported(f"element {value!r}")


@dataclass(frozen=True, slots=True)
class SetLayout:
    """What the translator needs to know about a named set to encode its elements: its key
    types, whether it holds intervals (a concatenation's elements then carry a key end)
    and its data type (``mark``) if it is a data map."""

    types: tuple[str, ...]
    interval: bool = False
    data: str | None = None


_PART_LENS: Final = {**_TYPE_LENS, "mark": 4}


def _hashable(value: Any) -> Any:
    if isinstance(value, dict) and "prefix" in value:
        return ("prefix", value["prefix"]["addr"], value["prefix"]["len"])
    if isinstance(value, dict) and "range" in value:
        return ("range", *value["range"])
    if isinstance(value, (str, int)):
        return value
    raise Unsupported(f"element part {value!r}")


@functools.lru_cache(maxsize=65536)
def _cached_part(value: Any, type_name: str) -> tuple[bytes, bytes]:
    if isinstance(value, tuple) and value[0] == "prefix":
        return _typed_part({"prefix": {"addr": value[1], "len": value[2]}}, type_name)
    if isinstance(value, tuple):
        return _typed_part({"range": [value[1], value[2]]}, type_name)
    return _typed_part(value, type_name)


def _typed_part(value: Any, type_name: str) -> tuple[bytes, bytes]:
    """(start, end) of one part of a typed element: a value, a prefix or a range."""
    if type_name in ("ipv4_addr", "ipv6_addr"):
        if isinstance(value, dict) and "prefix" in value:
            net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
            return net.network_address.packed, net.broadcast_address.packed
        if isinstance(value, dict) and "range" in value:
            low, high = value["range"]
            return ipaddress.ip_address(low).packed, ipaddress.ip_address(high).packed
        packed = _guess_key(value)
        return packed, packed
    if type_name == "ether_addr":
        return _ether(value), _ether(value)
    length = _PART_LENS[type_name]
    names = _L4PROTOS if type_name == "inet_proto" else None
    if isinstance(value, dict) and "range" in value:
        low, high = (_int_value(v, names) for v in value["range"])
    else:
        low = high = _int_value(value, names)
    # A mark is in host byte order, except in an interval set, where nft keeps every key
    # big-endian (and converts the packet's mark in the rule before the lookup).
    order: Literal["little", "big"] = sys.byteorder if type_name == "mark" else "big"
    return low.to_bytes(length, order), high.to_bytes(length, order)


def _big_endian_mark(value: Any) -> tuple[bytes, bytes]:
    low, high = _typed_part(value, "mark")
    return low[::-1] if sys.byteorder == "little" else low, \
        high[::-1] if sys.byteorder == "little" else high


def typed_key(value: Any, layout: SetLayout) -> tuple[bytes, bytes]:
    """(key, key end) of an element of a set laid out as ``layout`` (each part of a
    concatenation padded to 32 bits, as nft does)."""
    parts = value["concat"] if isinstance(value, dict) and "concat" in value else [value]
    if len(parts) != len(layout.types):
        raise Unsupported(f"element {value!r} for {layout.types}")
    starts, ends = [], []
    for part, type_name in zip(parts, layout.types, strict=True):
        if type_name == "mark" and layout.interval:
            start, end = _big_endian_mark(part)
        else:
            start, end = _cached_part(_hashable(part), type_name)
        pad = 4 * _slots(len(start)) if len(layout.types) > 1 else len(start)
        starts.append(start.ljust(pad, b"\0"))
        ends.append(end.ljust(pad, b"\0"))
    return b"".join(starts), b"".join(ends)


def _typed_element(item: Any, layout: SetLayout, *, delete: bool) -> bytes:
    extra: list[bytes] = []
    if isinstance(item, dict) and "elem" in item:
        spec = item["elem"]
        if not isinstance(spec, dict) or set(spec) - {"val", "timeout"}:
            raise Unsupported(f"element {item!r}")
        if "timeout" in spec and not delete:
            ms = struct.pack("!Q", 1000 * _int_value(spec["timeout"]))
            extra += [attr(NFTA_SET_ELEM_TIMEOUT, ms), attr(NFTA_SET_ELEM_EXPIRATION, ms)]
        item = spec["val"]
    if layout.data is not None:
        if not (isinstance(item, list) and len(item) == 2):
            raise Unsupported(f"map element {item!r}")
        item, value = item
        if not delete:
            data = _int_value(value).to_bytes(_PART_LENS[layout.data], sys.byteorder)
            extra.append(nested(NFTA_SET_ELEM_DATA, _data(data)))
    key, end = typed_key(item, layout)
    attrs = [nested(NFTA_SET_ELEM_KEY, _data(key))]
    if layout.interval and len(layout.types) > 1:
        attrs.append(nested(NFTA_SET_ELEM_KEY_END, _data(end)))
    elif key != end:
        raise Unsupported(f"an interval element {item!r} in a set without intervals")
    return nested(NFTA_LIST_ELEM, *attrs, *extra)


def _set_elements(batch: _Batch, body: dict[str, Any], *, delete: bool) -> None:
    if set(body) - {"family", "table", "name", "elem"} or body.get("family") != "inet":
        raise Unsupported("element command")
    items = body.get("elem")
    if not isinstance(items, list) or not items:
        raise Unsupported("element list")
    layout = batch.set_types.get(_name(body))
    if layout is not None:
        elements = [_typed_element(item, layout, delete=delete) for item in items]
    else:
        elements = [_set_element(item, delete=delete) for item in items]
    head = [attr_str(NFTA_SET_ELEM_LIST_TABLE, _table(body)),
            attr_str(NFTA_SET_ELEM_LIST_SET, _name(body))]
    group: list[bytes] = []
    size = 0
    for element in [*elements, b""]:  # b"": the end
        if group and (not element or size + len(element) > _ELEMENTS_PER_MESSAGE):
            # A netlink attribute holds at most 64 KiB: a long list (thousands of
            # addresses at start-up) goes in several messages of the same batch.
            batch.add(NFT_MSG_DELSETELEM if delete else NFT_MSG_NEWSETELEM,
                      0 if delete else NLM_F_CREATE,
                      b"".join([*head, nested(NFTA_SET_ELEM_LIST_ELEMENTS, *group)]))
            group, size = [], 0
        if element:
            group.append(element)
            size += len(element)


_ELEMENTS_PER_MESSAGE = 32768
"""Bytes of elements in one set-element message (the nested attribute's limit is 64 KiB)."""


def _set_element(item: Any, *, delete: bool) -> bytes:
    extra: list[bytes] = []
    if isinstance(item, list) and len(item) == 2 and not delete:
        key, target = item
        if not (isinstance(target, dict) and len(target) == 1):
            raise Unsupported(f"map value {target!r}")
        (verdict, arg), = target.items()
        if verdict in ("jump", "goto") and isinstance(arg, dict):
            extra.append(nested(NFTA_SET_ELEM_DATA, verdict_data(verdict, _chain(arg))))
        elif verdict in VERDICTS and arg is None:
            extra.append(nested(NFTA_SET_ELEM_DATA, verdict_data(verdict)))
        else:
            raise Unsupported(f"map value {target!r}")
        item = key
    if isinstance(item, dict) and "elem" in item:
        spec = item["elem"]
        if not isinstance(spec, dict) or set(spec) - {"val", "timeout"} or delete:
            raise Unsupported(f"element {item!r}")
        if "timeout" in spec:
            ms = struct.pack("!Q", 1000 * _int_value(spec["timeout"]))
            extra += [attr(NFTA_SET_ELEM_TIMEOUT, ms), attr(NFTA_SET_ELEM_EXPIRATION, ms)]
        item = spec["val"]
    return _element(_guess_key(item), 0, *extra)


def _chain(arg: dict[str, Any]) -> str:
    target = arg.get("target")
    if not isinstance(target, str) or not target:
        raise Unsupported(f"jump {arg!r}")
    return target


# -- statements and commands ----------------------------------------------------------------------


def _statement(rule: _Rule, stmt: Any) -> None:
    if not isinstance(stmt, dict) or len(stmt) != 1:
        raise Unsupported(f"statement {stmt!r}")
    (kind, body), = stmt.items()
    if kind == "match":
        _match(rule, body)
    elif kind in ("accept", "drop", "return", "continue") and body is None:
        rule.append(_immediate(kind, None))
    elif kind in ("jump", "goto") and isinstance(body, dict):
        rule.append(_immediate(kind, _chain(body)))
    elif kind == "limit" and isinstance(body, dict):
        rule.append(_limit(body))
    elif kind == "log" and isinstance(body, dict):
        rule.append(_log(body))
    else:
        raise Unsupported(f"statement {kind!r}")


@functools.lru_cache(maxsize=1024)
def _immediate(verdict: str, chain: str | None) -> bytes:
    return _expr("immediate", attr_u32(1, NFT_REG_VERDICT), nested(2, verdict_data(verdict, chain)))


def _limit(body: dict[str, Any]) -> bytes:
    if set(body) - {"rate", "per", "burst", "inv"} or "burst" not in body:
        raise Unsupported(f"limit {body!r}")
    per = _PER.get(body.get("per", "second"))
    if per is None:
        raise Unsupported(f"limit per {body.get('per')!r}")
    return _expr("limit", attr_u64(1, _int_value(body["rate"])), attr_u64(2, per),
                 attr_u32(3, _int_value(body["burst"])), attr_u32(4, 0),
                 attr_u32(5, NFT_LIMIT_F_INV if body.get("inv") else 0))


def _log(body: dict[str, Any]) -> bytes:
    if set(body) - {"prefix", "group"}:
        raise Unsupported(f"log {body!r}")
    attrs: list[bytes] = []
    if "prefix" in body:
        prefix = body["prefix"]
        if not isinstance(prefix, str) or not prefix.isprintable() or len(prefix) > 127:
            raise Unsupported("log prefix")
        attrs.append(attr_str(2, prefix))  # NFTA_LOG_PREFIX
    if "group" in body:
        attrs.append(attr(1, struct.pack("!H", _int_value(body["group"]))))  # NFTA_LOG_GROUP
    return _expr("log", *attrs)


def _comment_udata(comment: Any) -> bytes:
    if not isinstance(comment, str):
        raise Unsupported("comment")
    raw = comment.encode("utf-8") + b"\0"
    if len(raw) > MAX_COMMENT:
        raise Unsupported("comment too long")
    return bytes([0, len(raw)]) + raw  # NFTNL_UDATA_RULE_COMMENT


def _table(body: dict[str, Any]) -> str:
    table = body.get("table")
    if not isinstance(table, str) or not table.isascii() or not table:
        raise Unsupported("table name")
    return table


def _name(body: dict[str, Any], key: str = "name") -> str:
    name = body.get(key)
    if not isinstance(name, str) or not name.isascii() or not name or len(name) > 255:
        raise Unsupported(f"{key} {name!r}")
    return name


def _add_rule(batch: _Batch, body: dict[str, Any]) -> None:
    if set(body) - {"family", "table", "chain", "expr", "comment"} or body.get("family") != "inet":
        raise Unsupported("rule")
    statements = body.get("expr")
    if not isinstance(statements, list):
        raise Unsupported("rule expressions")
    rule = _Rule(batch)
    for stmt in statements:
        _statement(rule, stmt)
    attrs = [attr_str(NFTA_RULE_TABLE, _table(body)),
             attr_str(NFTA_RULE_CHAIN, _name(body, "chain")),
             nested(NFTA_RULE_EXPRESSIONS, *rule.exprs)]
    if body.get("comment"):
        attrs.append(attr(NFTA_RULE_USERDATA, _comment_udata(body["comment"])))
    batch.add(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, b"".join(attrs))


def _chain_command(batch: _Batch, verb: str, body: dict[str, Any]) -> None:
    if set(body) - {"family", "table", "name"} or body.get("family") != "inet":
        raise Unsupported("base chains and chain options go through libnftables")
    if verb == "flush":
        batch.add(NFT_MSG_DELRULE, 0, attr_str(NFTA_RULE_TABLE, _table(body))
                  + attr_str(NFTA_RULE_CHAIN, _name(body)))
        return
    kind = NFT_MSG_NEWCHAIN if verb == "add" else NFT_MSG_DELCHAIN
    batch.add(kind, NLM_F_CREATE if verb == "add" else 0,
              attr_str(NFTA_CHAIN_TABLE, _table(body)) + attr_str(NFTA_CHAIN_NAME, _name(body)))


def _command(batch: _Batch, command: Any) -> None:
    if not isinstance(command, dict) or len(command) != 1:
        raise Unsupported(f"command {command!r}")
    (verb, spec), = command.items()
    if not isinstance(spec, dict) or len(spec) != 1:
        raise Unsupported(f"command {verb!r}")
    (obj, body), = spec.items()
    if not isinstance(body, dict):
        raise Unsupported(f"{verb} {obj}")
    batch.table = _table(body)  # a rule's anonymous sets live in its table
    if obj == "chain" and verb in ("add", "flush", "delete"):
        _chain_command(batch, verb, body)
    elif obj == "rule" and verb == "add":
        _add_rule(batch, body)
    elif obj == "set" and verb == "add":
        _add_set(batch, body)
    elif obj == "set" and verb == "delete":
        if set(body) - {"family", "table", "name"} or body.get("family") != "inet":
            raise Unsupported("set deletion")
        batch.add(NFT_MSG_DELSET, 0, attr_str(NFTA_SET_TABLE, _table(body))
                  + attr_str(NFTA_SET_NAME, _name(body)))
    elif obj == "element" and verb in ("add", "delete"):
        _set_elements(batch, body, delete=verb == "delete")
    else:
        raise Unsupported(f"{verb} {obj}")


def encode_batch(commands: Sequence[NftCommand],
                 set_types: dict[str, SetLayout] | None = None) -> list[Message]:
    """The nf_tables messages that do what ``commands`` (libnftables JSON) do.

    ``set_types`` lays out the named sets whose elements cannot be told from their text
    (concatenations with ports and ranges, mark maps: ``policy._data``).

    Raises:
        Unsupported: a command or expression outside this translator's vocabulary;
            nothing is sent then (the caller uses libnftables for the batch).
    """
    batch = _Batch(table="", set_types=dict(set_types or {}))
    for index, command in enumerate(commands):
        batch.origin = index
        _command(batch, command)
    return batch.messages

