"""RFC 9238 label codec: round trips, real images (segno → zxing-cpp), hostile payloads."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mudguard.discovery.qr import EOT, GS, HEADER, RS, QrError, QrRecord, build_qr, parse_qr
from mudguard.labels import label_png, label_svg, layout, qr_png, read_label, read_qr_texts

URL = "https://mud.example.com/devices/lightbulb-2000.json"
FULL = QrRecord(mud_url=URL, company="Example Lighting", product="Smart bulb",
                model="LB-2000", mac="00:11:22:33:44:55")


def test_build_uses_rfc9238_envelope() -> None:
    payload = build_qr(FULL)
    assert payload.startswith("[)>\x1e06\x1d")
    assert payload.endswith("\x1e\x04")
    assert payload.split(GS)[1:] == ["B000Example Lighting", "B001Smart bulb", "B002LB-2000",
                                     "M180" + URL, "M06C001122334455\x1e\x04"]


def test_round_trip_text() -> None:
    assert parse_qr(build_qr(FULL)) == FULL


def test_minimal_record_and_unknown_identifiers_are_kept() -> None:
    payload = HEADER + "M180" + URL + GS + "1P12AB" + RS + EOT
    record = parse_qr(payload)
    assert (record.mud_url, record.company, record.mac) == (URL, None, None)
    assert record.other == {"1P12": "AB"}


def test_missing_eot_is_tolerated_but_not_missing_rs() -> None:
    assert parse_qr(HEADER + "M180" + URL + RS).mud_url == URL
    with pytest.raises(QrError) as err:
        parse_qr(HEADER + "M180" + URL)
    assert err.value.key == "qr_no_trailer"


@pytest.mark.parametrize(("payload", "key"), [
    ("https://mud.example.com/x.json", "qr_no_header"),
    ("[)>\x1e05\x1dM180" + URL + "\x1e\x04", "qr_no_header"),
    (HEADER + "B000Acme" + RS + EOT, "qr_no_mud_url"),
    (HEADER + "M180http://mud.example.com/x.json" + RS + EOT, "qr_bad_mud_url"),
    (HEADER + "M180javascript:alert(1)" + RS + EOT, "qr_bad_mud_url"),
    (HEADER + "M180https://user:pw@mud.example.com/x" + RS + EOT, "qr_bad_mud_url"),
    (HEADER + "M180https:///nohost" + RS + EOT, "qr_bad_mud_url"),
    (HEADER + "M180https://mud.example.com:99999/x" + RS + EOT, "qr_bad_mud_url"),
    (HEADER + "M180https://mud.example.com/a b" + RS + EOT, "qr_bad_mud_url"),
    (HEADER + "M180" + URL + GS + "M06C0011223344" + RS + EOT, "qr_bad_mac"),
    (HEADER + "M180" + URL + GS + "M06Czz1122334455" + RS + EOT, "qr_bad_mac"),
    (HEADER + "M180" + URL + GS + "B000Ac\x00me" + RS + EOT, "qr_control_chars"),
    (HEADER + "M180" + URL + GS + "B000Ac\x1bme" + RS + EOT, "qr_control_chars"),
    (HEADER + "M180" + URL + GS + "M180" + URL + RS + EOT, "qr_duplicate"),
    (HEADER + "M180" + URL + GS + "b0" + RS + EOT, "qr_bad_element"),
    (HEADER + "M180" + URL + GS + "B000" + "x" * 300 + RS + EOT, "qr_bad_text"),
    (HEADER + "M180https://mud.example.com/" + "a" * 3000 + RS + EOT, "qr_too_long"),
    (b"\xff\xfe" + HEADER.encode(), "qr_not_text"),
])
def test_hostile_payloads_get_a_clear_key(payload: str | bytes, key: str) -> None:
    with pytest.raises(QrError) as err:
        parse_qr(payload)
    assert err.value.key == key
    assert err.value.reason  # a sentence for the owner


def test_build_refuses_what_parse_would_refuse() -> None:
    with pytest.raises(QrError):
        build_qr(QrRecord(mud_url="http://mud.example.com/x.json"))
    with pytest.raises(QrError):
        build_qr(QrRecord(mud_url=URL, mac="not-a-mac"))
    with pytest.raises(QrError):
        build_qr(QrRecord(mud_url=URL, company="a\x1db"))


_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                                   blacklist_categories=("Cc", "Cf", "Zs")), max_size=40)


# A device's MAC: unicast (I/G bit clear) and not all-zero; labels naming others fail.
_unicast = st.binary(min_size=6, max_size=6).filter(lambda b: not b[0] & 1 and any(b))


@settings(max_examples=150, deadline=None)
@given(company=st.none() | _printable, model=st.none() | _printable,
       mac=st.none() | _unicast)
def test_round_trip_property(company: str | None, model: str | None, mac: bytes | None) -> None:
    mac_text = ":".join(f"{b:02x}" for b in mac) if mac is not None else None
    record = QrRecord(mud_url=URL, company=company, model=model, mac=mac_text)
    assert parse_qr(build_qr(record)) == record


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_never_raises_anything_but_qr_error(junk: str | bytes) -> None:
    with contextlib.suppress(QrError):
        parse_qr(junk)


def test_png_round_trip_through_real_decoder() -> None:
    image = qr_png(build_qr(FULL))
    assert Image.open(io.BytesIO(image)).format == "PNG"
    assert read_label(image) == FULL


def test_photo_like_image_decodes(tmp_path: Path) -> None:
    """A label pasted small and rotated on a grey background, saved as JPEG."""
    qr = Image.open(io.BytesIO(qr_png(build_qr(FULL), scale=5))).convert("L")
    canvas = Image.new("L", (900, 700), 170)
    canvas.paste(qr.rotate(8, expand=True, fillcolor=170), (180, 120))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=80)
    assert read_label(out.getvalue()).mud_url == URL


def test_printed_label_png_decodes_to_the_same_record() -> None:
    assert read_label(label_png(FULL)) == FULL


def test_label_svg_escapes_text_and_holds_the_qr() -> None:
    hostile = QrRecord(mud_url=URL, company="<script>alert(1)</script>", product='"><x y="')
    svg = label_svg(hostile)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert '"><x' not in svg
    url_lines = layout(hostile).url_lines
    assert "".join(url_lines) == URL and all(line in svg for line in url_lines)
    assert svg.startswith("<svg") and "<path" in svg


def test_svg_label_renders_and_decodes_through_chromium(tmp_path: Path) -> None:
    """The SVG is valid enough for a real renderer: skip when chromium is absent."""
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    svg_file = tmp_path / "label.svg"
    svg_file.write_text(label_svg(FULL))
    shot = tmp_path / "shot.png"
    subprocess.run([str(chromium), "--headless", "--no-sandbox", "--disable-gpu",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=700,400",
                    f"--screenshot={shot}", svg_file.as_uri()],
                   check=True, capture_output=True, timeout=60)
    assert read_label(shot.read_bytes()) == FULL


def test_no_qr_and_not_an_image() -> None:
    blank = io.BytesIO()
    Image.new("L", (200, 200), 255).save(blank, format="PNG")
    with pytest.raises(QrError) as err:
        read_label(blank.getvalue())
    assert err.value.key == "image_no_qr"
    with pytest.raises(QrError) as err:
        read_label(b"<svg onload=alert(1)>")
    assert err.value.key == "image_unreadable"


def test_plain_url_qr_is_not_a_label() -> None:
    out = io.BytesIO()
    segno.make(URL).save(out, kind="png", scale=5)
    assert read_qr_texts(out.getvalue()) == [URL]
    with pytest.raises(QrError) as err:
        read_label(out.getvalue())
    assert err.value.key == "qr_no_header"


def test_decompression_bomb_is_refused() -> None:
    out = io.BytesIO()
    Image.new("1", (10_000, 5_000), 1).save(out, format="PNG")  # 50 Mpx, a few kB
    assert len(out.getvalue()) < 200_000
    with pytest.raises(QrError) as err:
        read_label(out.getvalue())
    assert err.value.key in {"image_too_large", "image_unreadable"}


def test_cli_make_and_read(tmp_path: Path) -> None:
    png = tmp_path / "label.png"
    cmd = [sys.executable, "-m", "mudguard", "label", "make", "--mud-url", URL,
           "--mac", "00-11-22-33-44-55", "--company", "Example Lighting", "--model", "LB-2000",
           "-o", str(png)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    done = subprocess.run([sys.executable, "-m", "mudguard", "label", "read", str(png), "--json"],
                          check=True, capture_output=True, text=True, timeout=60)
    assert '"mac": "00:11:22:33:44:55"' in done.stdout
    bad = subprocess.run([*cmd[:6], "http://x.example/y", *cmd[7:]], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "qr_bad_mud_url" in bad.stderr


def test_codec_is_pure() -> None:
    """The codec imports no I/O: it can run anywhere a label is read."""
    code = ("import sys, mudguard.discovery.qr\n"
            "bad = {'socket', 'subprocess', 'sqlite3', 'asyncio', 'nftables', 'pyroute2',"
            " 'httpx', 'fastapi', 'PIL', 'zxingcpp', 'segno'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
