"""The JSON → nf_tables translator without a kernel: what it refuses, and the layout
choices nft makes that it must make too (the kernel round trip, where the bytecode
must equal libnftables', is ``tests/netns/test_enforce_bytecode.py``)."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest

from mudguard.enforce.bytecode import (
    NFT_MSG_DELRULE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM,
    Unsupported,
    encode_batch,
)
from mudguard.enforce.nfnetlink import iter_attrs, parse_attrs

T = {"family": "inet", "table": "mudguard_03"}


def rule(*exprs: dict[str, Any], comment: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {**T, "chain": "dev_x_out", "expr": list(exprs)}
    if comment:
        body["comment"] = comment
    return {"add": {"rule": body}}


def match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def expressions(message_body: bytes) -> list[tuple[str, dict[int, bytes]]]:
    """(name, attributes) of each expression of a NEWRULE body."""
    listed = parse_attrs(message_body)[4]  # NFTA_RULE_EXPRESSIONS
    out = []
    for _kind, elem in iter_attrs(listed):
        attrs = parse_attrs(elem)
        out.append((attrs[1].rstrip(b"\0").decode(), parse_attrs(attrs[2])))
    return out


def u32(raw: bytes) -> int:
    return int(struct.unpack("!I", raw)[0])


@pytest.mark.parametrize("command", [
    {"add": {"table": {"family": "inet", "name": "mudguard"}}},
    {"add": {"chain": {**T, "name": "forward", "type": "filter", "hook": "forward",
                       "prio": 0, "policy": "drop"}}},
    rule({"counter": None}),
    {"add": {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": []}}},
    rule(match(payload("sctp", "dport"), 1)),
    rule(match(payload("tcp", "dport"), 1), match(payload("udp", "dport"), 2)),
    rule({"vmap": {"key": payload("ip", "daddr"), "data": "@m"}}),
    rule(match(payload("ip", "daddr"), {"prefix": {"addr": "2001:db8::", "len": 32}})),
    rule(match(payload("tcp", "dport"), 70000)),
    rule({"log": {"prefix": "x", "level": "warn"}}),
    {"add": {"set": {**T, "name": "s", "type": "ipv4_addr", "flags": ["interval"]}}},
    {"add": {"element": {**T, "name": "s", "elem": ["not-an-address"]}}},
])
def test_outside_the_vocabulary_is_refused_whole(command: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        encode_batch([rule(match(payload("tcp", "dport"), 443), {"accept": None}), command])


def test_dependencies_are_added_once_and_explicit_matches_count() -> None:
    (message,) = encode_batch([rule(match(payload("ip", "daddr"), "192.0.2.1"),
                                    match(payload("ip", "saddr"), "192.0.2.2"),
                                    match(payload("tcp", "dport"), 443), {"accept": None})])
    names = [name for name, _ in expressions(message.body)]
    # nfproto == ipv4 once, ip saddr.daddr, l4proto == tcp, the port, the verdict
    assert names == ["meta", "cmp", "payload", "cmp", "payload", "cmp", "meta", "cmp",
                     "payload", "cmp", "immediate"]
    (explicit,) = encode_batch([rule(match({"meta": {"key": "l4proto"}}, 6),
                                     match(payload("tcp", "dport"), 443), {"accept": None})])
    assert [n for n, _ in expressions(explicit.body)].count("meta") == 1


def test_adjacent_equal_payloads_load_once_as_nft_merges_them() -> None:
    (message,) = encode_batch([rule(match(payload("udp", "sport"), 68),
                                    match(payload("udp", "dport"), 67), {"accept": None})])
    loads = [a for n, a in expressions(message.body) if n == "payload"]
    assert len(loads) == 1 and u32(loads[0][4]) == 4 and u32(loads[0][3]) == 0  # 4 bytes @ 0
    cmps = [a for n, a in expressions(message.body) if n == "cmp"]
    assert parse_attrs(cmps[-1][3])[1] == struct.pack("!HH", 68, 67)


def test_prefixes_load_fewer_bytes_or_mask() -> None:
    (aligned,) = encode_batch([rule(match(payload("ip", "daddr"),
                                          {"prefix": {"addr": "192.0.2.0", "len": 24}}))])
    loads = [a for n, a in expressions(aligned.body) if n == "payload"]
    assert u32(loads[0][4]) == 3
    (odd,) = encode_batch([rule(match(payload("ip", "daddr"),
                                      {"prefix": {"addr": "10.0.0.0", "len": 9}}))])
    assert "bitwise" in [n for n, _ in expressions(odd.body)]


def test_interval_sets_get_nfts_element_layout() -> None:
    messages = encode_batch([rule(match(payload("ip", "daddr"), {"set": [
        {"prefix": {"addr": "10.0.0.0", "len": 24}}, {"prefix": {"addr": "10.0.1.0", "len": 24}},
        "192.0.2.1"]}), {"accept": None})])
    assert [m.kind for m in messages] == [NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NFT_MSG_NEWRULE]
    listed = parse_attrs(messages[1].body)[3]
    elements = []
    for _kind, raw in iter_attrs(listed):
        elem = parse_attrs(raw)
        key = parse_attrs(elem[1])[1]
        end = u32(elem[3]) if 3 in elem else 0
        elements.append((str(ipaddress.ip_address(key)), end))
    # a leading end marker, adjacent prefixes merged, each interval as start and end + 1
    assert elements == [("0.0.0.0", 1), ("10.0.0.0", 0), ("10.0.2.0", 1),
                        ("192.0.2.1", 0), ("192.0.2.2", 1)]


def test_concatenations_use_nfts_registers() -> None:
    (message,) = encode_batch([rule(match({"concat": [payload("ip6", "saddr"),
                                                      payload("ip6", "daddr")]}, "@dns6_x"),
                                    {"accept": None})])
    registers = [u32(a[1]) for n, a in expressions(message.body) if n == "payload"]
    assert registers == [1, 2]  # 16-byte fields: NFT_REG_1, NFT_REG_2
    (v4,) = encode_batch([rule(match({"concat": [payload("ip", "saddr"),
                                                 payload("ip", "daddr")]}, "@dns4_x"))])
    assert [u32(a[1]) for n, a in expressions(v4.body) if n == "payload"] == [1, 9]


def test_chain_replacement_and_comments() -> None:
    body = {**T, "name": "dev_x_out"}
    messages = encode_batch([{"add": {"chain": body}}, {"flush": {"chain": body}},
                             rule({"drop": None}, comment="policy 0123")])
    assert [m.kind for m in messages] == [NFT_MSG_NEWCHAIN, NFT_MSG_DELRULE, NFT_MSG_NEWRULE]
    assert [m.origin for m in messages] == [0, 1, 2]
    udata = parse_attrs(messages[2].body)[7]
    assert udata == bytes([0, len("policy 0123") + 1]) + b"policy 0123\0"


def test_an_ipv6_address_shaped_like_a_mac_is_an_address() -> None:
    # 17 characters and 5 colons, like a MAC: once taken for one (then refused whole).
    cmd = {"add": {"element": {"family": "inet", "table": "mudguard", "name": "pending6",
                               "elem": ["2001:db8:1::1:100"]}}}
    (message,) = encode_batch([cmd])
    assert ipaddress.ip_address("2001:db8:1::1:100").packed in message.body


def test_long_element_lists_are_split_below_the_attribute_limit() -> None:
    addresses = [str(ipaddress.ip_address("2001:db8:1::1:0") + i) for i in range(5000)]
    cmd = {"add": {"element": {"family": "inet", "table": "mudguard", "name": "pending6",
                               "elem": addresses}}}
    messages = encode_batch([cmd])
    assert len(messages) > 1 and all(len(m.body) < 65535 for m in messages)
    assert sum(m.body.count(b"\x20\x01\x0d\xb8") for m in messages) == 5000
