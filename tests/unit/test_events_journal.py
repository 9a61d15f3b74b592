"""Events to journald: the native protocol's encoding, read back by a datagram socket
standing where journald's is, and the choice of the format from ``JOURNAL_STREAM``.
(The package test reads them back from a real journald: tests/e2e/test_package.py.)"""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

from mudguard.daemon.events import (
    EventLog,
    JournalSink,
    encode_journal_entry,
    event_priority,
    journal_fields,
)


def decode_journal_entry(data: bytes) -> dict[str, str]:
    """journald's side of the native protocol (systemd's journal-native-protocol)."""
    fields: dict[str, str] = {}
    while data:
        line, sep, rest = data.partition(b"\n")
        assert sep
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            data = rest
        else:
            (size,) = struct.unpack("<Q", rest[:8])
            fields[line.decode()] = rest[8:8 + size].decode()
            assert rest[8 + size:9 + size] == b"\n"
            data = rest[9 + size:]
    return fields


def test_an_event_becomes_a_journal_entry_with_its_kind_fields_and_priority(
        tmp_path: Path) -> None:
    path = str(tmp_path / "journal.sock")
    journald = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journald.bind(path)
    journald.settimeout(5)
    stdout = io.StringIO()
    events = EventLog(json_lines=False, stream=stdout, journal=JournalSink(path))
    events.emit("alert", mac="02:00:5e:00:53:01", kind="new-peer",
                message="talked to 198.51.100.7\nafter midnight")
    events.emit("drops", mac="02:00:5e:00:53:01", count=3, flows=["tcp 198.51.100.30 port 443"])
    alert = decode_journal_entry(journald.recv(65536))
    drops = decode_journal_entry(journald.recv(65536))
    assert stdout.getvalue() == ""  # all went to the journal
    assert alert["MUDGUARD_EVENT"] == "alert"
    assert alert["PRIORITY"] == "4"
    assert alert["SYSLOG_IDENTIFIER"] == "mudguard"
    assert alert["MUDGUARD_MAC"] == "02:00:5e:00:53:01"
    assert alert["MUDGUARD_MESSAGE"] == "talked to 198.51.100.7\nafter midnight"  # binary form
    assert alert["MESSAGE"].startswith("alert mac=02:00:5e:00:53:01")
    assert drops["MUDGUARD_COUNT"] == "3"
    assert drops["MUDGUARD_FLOWS"] == '["tcp 198.51.100.30 port 443"]'
    assert drops["PRIORITY"] == "5"
    assert '"event": "drops"' in drops["MUDGUARD_JSON"]


def test_an_entry_journald_does_not_take_is_written_on_stdout(tmp_path: Path) -> None:
    stdout = io.StringIO()
    events = EventLog(json_lines=False, stream=stdout,
                      journal=JournalSink(str(tmp_path / "nobody-listens.sock")))
    events.emit("error", message="fetch failed")
    assert '"event": "error"' in stdout.getvalue()
    assert '"message": "fetch failed"' in stdout.getvalue()


def test_priorities_follow_the_gravity() -> None:
    assert event_priority("error", {}) == 3
    assert event_priority("reload-refused", {}) == 3
    assert event_priority("device", {"state": "quarantined"}) == 4
    assert event_priority("device", {"state": "profiled"}) == 6
    assert event_priority("ready", {}) == 6


def test_field_names_are_what_journald_accepts() -> None:
    entry = journal_fields({"t": 1.0, "event": "sbom", "mud-url": "x", "dns_elsewhere": None},
                           "sbom")
    assert "MUDGUARD_MUD_URL" in entry
    assert "MUDGUARD_DNS_ELSEWHERE" not in entry  # None: left out
    assert all(key.replace("_", "").isalnum() and key.isupper() for key in entry)
    assert encode_journal_entry({"A": "1", "B": "x\ny"}) == \
        b"A=1\nB\n" + struct.pack("<Q", 3) + b"x\ny\n"


def test_stdout_is_the_journal_only_when_journal_stream_names_it(tmp_path: Path) -> None:
    probe = ("from mudguard.daemon import events\n"
             "events.JOURNAL_SOCKET = '/'\n"  # exists: only the stream is in question
             "import sys; sys.stderr.write(str(events.stdout_is_journal()))")
    out = tmp_path / "stdout"
    with out.open("w") as stream:
        st = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        named = subprocess.run([sys.executable, "-c", probe], stdout=stream, env=env,
                               stderr=subprocess.PIPE, text=True, timeout=60, check=True)
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino + 1}"
        other = subprocess.run([sys.executable, "-c", probe], stdout=stream, env=env,
                               stderr=subprocess.PIPE, text=True, timeout=60, check=True)
    assert (named.stderr, other.stderr) == ("True", "False")
