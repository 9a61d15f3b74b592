"""The nfnetlink encoding of set-element fills (the kernel round trip is in tests/netns)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from mudguard.dns.core import AddSetElements
from mudguard.dns.netlink import NFT_MSG_NEWSETELEM, encode_key, encode_newsetelem
from mudguard.enforce.nfnetlink import NLM_F_CREATE


def attrs(data: bytes) -> list[tuple[int, bytes]]:
    """Split a run of netlink attributes into (type without flags, payload)."""
    out, offset = [], 0
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        out.append((kind & 0x3FFF, data[offset + 4: offset + length]))
        offset += (length + 3) & ~3
    return out


def test_message_layout_matches_the_kernel_abi() -> None:
    cmd = AddSetElements(1, "dns4_0123456789ab", 4,
                         (("192.0.2.10", "198.51.100.7"), ("192.0.2.10", "198.51.100.8")), 310,
                         "mudguard_03")
    msg = encode_newsetelem(cmd, origin=7)
    assert msg.kind == NFT_MSG_NEWSETELEM and msg.flags & NLM_F_CREATE and msg.origin == 7
    (table, name, elements) = attrs(msg.body)
    assert table == (1, b"mudguard_03\0") and name == (2, b"dns4_0123456789ab\0")
    listed = attrs(elements[1])
    assert [k for k, _ in listed] == [1, 1]
    key, timeout, expires = attrs(listed[0][1])
    assert attrs(key[1]) == [(1, ipaddress.ip_address("192.0.2.10").packed
                              + ipaddress.ip_address("198.51.100.7").packed)]
    assert timeout == (4, struct.pack("!Q", 310_000)) and expires == (5, struct.pack("!Q", 310_000))


def test_ipv6_keys_are_32_bytes_and_families_never_mix() -> None:
    assert len(encode_key("2001:db8:1::10", "2001:db8:ff::1")) == 32
    assert len(encode_key("192.0.2.10", "198.51.100.1")) == 8
    with pytest.raises(ValueError, match="mixed families"):
        encode_key("192.0.2.10", "2001:db8:ff::1")
    with pytest.raises(ValueError):
        encode_key("192.0.2.10", "not-an-address")
