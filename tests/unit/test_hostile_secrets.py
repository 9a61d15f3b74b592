"""Secrets never in error messages: a malformed hostapd PSK file line names the line and
what is wrong with it, never any part of the passphrase (the errors reach logs and the
CLI). The lines are what a hand edit or a truncated write leaves behind."""

from __future__ import annotations

import pytest

from mudguard.keys.core import KeyFormatError, parse_psk_file

SECRET_WORDS = ("Tr0ub4dor", "horse", "s3cr3t")


@pytest.mark.parametrize("line", [
    "keyid=k1 Tr0ub4dor horse battery",          # the MAC is missing: a word is in its place
    "keyid=k1 Tr0ub4dor=horse battery staple",   # ... and the passphrase holds an '='
    "keyid=k1 s3cr3t-horse-battery",            # a one-word passphrase without a MAC
    "keyid=k1 02:00:5e:00:53:1 Tr0ub4dor horse",  # a truncated MAC
    "keyid=k1 vlanid=Tr0ub4dor 02:00:5e:00:53:10 horse battery",
])
def test_malformed_line_error_never_shows_the_passphrase(line: str) -> None:
    with pytest.raises(KeyFormatError) as caught:
        parse_psk_file("# mudguard\n" + line + "\n")
    message = str(caught.value)
    assert message.startswith("line 2:"), message
    assert not any(word in message for word in SECRET_WORDS), message
