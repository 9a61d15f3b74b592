"""Huge request bodies at the real portal (TestClient over the real stack): refused with
413 before any handler reads them into memory, announced (Content-Length) or streamed
(chunked, no length), logged in or not; ordinary requests are untouched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tests.unit.test_portal_support import portal

MIB = 1024 * 1024


def _chunks(total: int) -> Iterator[bytes]:
    block = b"[" + b"0," * (MIB // 2 - 1) + b"0]"
    for _ in range(total // len(block) + 1):
        yield block


def test_announced_huge_json_body_is_413_before_login(tmp_path: Path) -> None:
    with portal(tmp_path, logged_in=False) as (client, _st, _):
        body = b'{"username": "owner", "password": "' + b"x" * (20 * MIB) + b'"}'
        answer = client.post("/api/session", content=body,
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 413 and answer.json()["error"] == "too_large"


def test_streamed_huge_body_is_413(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, _st, _):
        answer = client.post("/api/onboard/preview", content=_chunks(40 * MIB),
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 413


def test_bad_content_length_is_refused(tmp_path: Path) -> None:
    with portal(tmp_path) as (client, _st, _):
        answer = client.post("/api/onboard/preview", content=b"{}",
                             headers={"Content-Type": "application/json",
                                      "Content-Length": "-1"})
        assert answer.status_code in (400, 413)


def test_ordinary_requests_still_work(tmp_path: Path) -> None:
    with portal(tmp_path, logged_in=False) as (client, _st, _):
        assert client.post("/api/session", json={"username": "owner",
                                                  "password": "nope"}).status_code in (401, 409)
        assert client.get("/static/../../../etc/passwd").status_code == 404
