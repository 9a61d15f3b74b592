"""Property tests: no input crashes the MUD parser, every rejection has a path and a message."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mudguard.mud import ParseResult, Severity, parse_mud
from tests.conftest import CORPUS as CORPUS_DIR

CORPUS_MUD = CORPUS_DIR / "mud"
CORPUS = [json.loads(p.read_bytes()) for p in sorted(CORPUS_MUD.rglob("*.json"))]

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
           | st.sampled_from(["eq", "range", "lte", "tcp", "ipv4-acl-type", "accept",
                              "from-device", "https://x.example/m", "192.0.2.1/24",
                              "2019-01-28T12:00:00Z", "0x0800"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=12) | st.sampled_from(
            ["ietf-mud:mud", "ietf-access-control-list:acls", "acl", "aces", "ace", "matches",
             "name", "type", "ipv4", "tcp", "port", "operator", "actions", "forwarding"]),
        inner, max_size=4),
    max_leaves=25,
)


def check_invariants(result: ParseResult) -> None:
    """The contract every parse result keeps, whatever the input."""
    for finding in result.findings:
        assert isinstance(finding.path, tuple)
        assert all(isinstance(p, str | int) for p in finding.path)
        assert finding.message.strip()
        assert str(finding).startswith(finding.where + ": ")
    if result.mud is None:
        assert not result.ok
        assert result.errors, "a rejection must say why"
    else:
        assert result.errors == ()
        again = parse_mud(result.mud.to_json())
        assert again.ok and again.mud is not None
        assert again.mud.acls == result.mud.acls


@FUZZ
@given(json_values)
def test_arbitrary_json_never_crashes(value: Any) -> None:
    check_invariants(parse_mud(json.dumps(value)))


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    check_invariants(parse_mud(data))


def _containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _containers(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _containers(value, (*path, i))
    return out


@FUZZ
@given(st.data())
def test_mutated_corpus_files_never_crash(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(CORPUS)))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _containers(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        if data.draw(st.booleans()):
            parent[path[-1]] = data.draw(json_values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    check_invariants(parse_mud(json.dumps(doc)))


def test_fuzz_finds_rejections_with_paths() -> None:
    """The invariants are not vacuous: mutations do produce pathed errors."""
    doc = copy.deepcopy(CORPUS[0])
    doc["ietf-mud:mud"]["cache-validity"] = {"nested": [1]}
    result = parse_mud(json.dumps(doc))
    (error,) = [f for f in result.findings if f.severity is Severity.ERROR]
    assert error.where == "mud.cache-validity"
    assert "expected an integer" in error.message
