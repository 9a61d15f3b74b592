"""The demo's referee on its own (pure): every outcome passes only on the evidence that
proves it, and fails on the evidence that disproves it, so ``demo --headless`` can fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from mudguard.demo.judge import Judge, Status


def _flow(judge: Judge, device: str, flow: str, ok: bool, t: float) -> None:
    judge.device_event({"event": "flow", "device": device, "flow": flow, "ok": ok, "t": t})


def _status(judge: Judge, key: str, *, final: bool = False) -> Status:
    return next(v.status for v in judge.outcomes(final=final) if v.key == key)


def test_bulb_passes_only_with_its_cloud_reached_and_elsewhere_blocked() -> None:
    judge = Judge()
    judge.device_state("bulb", "profiled", "signed_valid", 1.0)
    _flow(judge, "bulb", "cloud", True, 2.0)
    _flow(judge, "bulb", "ntp", True, 2.0)
    assert _status(judge, "bulb-flows") is Status.PENDING  # nothing blocked yet
    _flow(judge, "bulb", "elsewhere", False, 2.1)
    assert _status(judge, "bulb-flows") is Status.PASSED
    assert _status(judge, "bulb-signed") is Status.PASSED
    _flow(judge, "bulb", "elsewhere", True, 3.0)  # one leak is enough to fail
    assert _status(judge, "bulb-flows") is Status.FAILED


def test_an_invalid_signature_fails_the_bulb() -> None:
    judge = Judge()
    judge.device_state("bulb", "default", "invalid", 1.0)
    assert _status(judge, "bulb-signed") is Status.FAILED


def _camera(judge: Judge, *, quarantined_at: float) -> None:
    judge.device_state("camera", "profiled", None, 1.0)
    _flow(judge, "camera", "cloud", True, 2.0)
    judge.device_event({"event": "compromised", "device": "camera", "t": 10.0})
    judge.device_state("camera", "quarantined", None, quarantined_at)


def test_camera_must_be_quarantined_in_time_and_cut_off() -> None:
    judge = Judge(quarantine_within=5.0)
    _camera(judge, quarantined_at=10.05)
    assert _status(judge, "camera") is Status.PENDING  # cut-off not seen yet
    _flow(judge, "camera", "cloud", False, 12.0)
    assert _status(judge, "camera") is Status.PASSED
    _flow(judge, "camera", "cloud", True, 13.0)  # reached its cloud in quarantine
    assert _status(judge, "camera") is Status.FAILED


def test_camera_quarantined_too_late_or_never_fails() -> None:
    late = Judge(quarantine_within=5.0)
    _camera(late, quarantined_at=16.0)
    assert _status(late, "camera") is Status.FAILED
    never = Judge()
    never.device_state("camera", "profiled", None, 1.0)
    _flow(never, "camera", "cloud", True, 2.0)
    never.device_event({"event": "compromised", "device": "camera", "t": 10.0})
    assert _status(never, "camera") is Status.PENDING
    assert _status(never, "camera", final=True) is Status.FAILED


def test_plug_fails_the_moment_it_reaches_the_internet() -> None:
    judge = Judge()
    judge.device_state("plug", "out-of-support", None, 1.0)
    _flow(judge, "plug", "printer", True, 2.0)
    _flow(judge, "plug", "cloud", False, 2.0)
    _flow(judge, "plug", "elsewhere", False, 2.0)
    assert _status(judge, "plug") is Status.PASSED
    _flow(judge, "plug", "cloud", True, 3.0)
    assert _status(judge, "plug") is Status.FAILED


def test_gadget_must_be_blocked_while_learning_before_the_grant_and_allowed_after() -> None:
    judge = Judge()
    judge.device_state("nomud", "learning", None, 1.0)  # learning is on by default (#16)
    _flow(judge, "nomud", "cloud", False, 2.0)
    assert not judge.ready_for_grant()
    _flow(judge, "nomud", "cloud", False, 3.0)
    assert judge.ready_for_grant()
    judge.granted("nomud", 4.0)
    assert _status(judge, "gadget") is Status.PENDING
    _flow(judge, "nomud", "cloud", True, 5.0)
    assert _status(judge, "gadget") is Status.PASSED
    leaky = Judge()
    _flow(leaky, "nomud", "cloud", True, 2.0)  # open before any grant
    assert _status(leaky, "gadget") is Status.FAILED


def test_gadget_granted_without_ever_learning_fails() -> None:
    """The demo says the gadget is learned: on the home default but never learning (the
    daemon's learning off), the outcome fails instead of passing on the flows alone."""
    judge = Judge()
    judge.device_state("nomud", "default", None, 1.0)
    _flow(judge, "nomud", "cloud", False, 2.0)
    _flow(judge, "nomud", "cloud", False, 3.0)
    assert judge.ready_for_grant()  # the home default all the same: the owner may grant
    judge.granted("nomud", 4.0)
    _flow(judge, "nomud", "cloud", True, 5.0)
    assert _status(judge, "gadget") is Status.FAILED
    profiled = Judge()  # a device with its own rules is not the owner's to grant here
    profiled.device_state("nomud", "profiled", None, 1.0)
    _flow(profiled, "nomud", "cloud", False, 2.0)
    _flow(profiled, "nomud", "cloud", False, 3.0)
    assert not profiled.ready_for_grant()


def test_wifi_keys_must_be_one_per_device_in_hostapds_file(tmp_path: Path) -> None:
    from mudguard.keys.core import PskEntry, render_psk_file

    macs = {"02:6d:67:00:00:00": "bulb", "02:6d:67:00:00:01": "camera"}
    entries = [PskEntry(keyid=f"dev-{i}", mac=mac, passphrase=f"passphrase-{i}-long")
               for i, mac in enumerate(macs)]
    psk = tmp_path / "psk"
    psk.write_text(render_psk_file(entries))
    judge = Judge(psk_file=psk, macs=macs)
    judge.view("bulb").wifi_key, judge.view("camera").wifi_key = "dev-0", "dev-1"
    assert _status(judge, "wifi") is Status.PASSED
    judge.view("camera").wifi_key = "dev-9"  # the file does not hold what was issued
    assert _status(judge, "wifi") is Status.FAILED


@pytest.mark.parametrize(("portal", "expected"), [
    (None, Status.PENDING), ((True, "303"), Status.PASSED), ((False, "refused"), Status.FAILED)])
def test_portal_outcome(portal: tuple[bool, str] | None, expected: Status) -> None:
    assert _status(Judge(portal=portal), "portal") is expected
