"""Adapter: frames straight off an interface, for learning a live device's profile.

``live_frames(interface, seconds)`` reads every frame the interface sends or
receives (an ``AF_PACKET`` socket, optionally opened inside a network namespace)
and yields them as ``(timestamp, frame, length)``, the same records the capture
reader yields, so ``Observer.add_frames`` and ``learn_mud`` learn a live device
with exactly the code that learns from a file. An interface without Ethernet
headers (a tunnel: raw IP; a monitor-mode radio: radiotap) is read through the
capture reader's link decoders (``profile.link``). Bounded in time and in frames.
Needs CAP_NET_RAW.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

from mudguard.errors import MudguardError
from mudguard.profile.link import LinkDecoder, link_decoder
from mudguard.watch.listener import in_netns

ETH_P_ALL = 0x0003
SNAP = 2048  # headers and DNS answers; the rest of a frame is never looked at
# Linux ARPHRD_* hardware types -> capture link type (pcap's LINKTYPE_*).
HARDWARE_LINKTYPES = {1: 1, 772: 1, 65534: 101, 768: 101, 776: 101, 801: 105, 803: 127}


def decoder_for_hardware(hatype: int) -> LinkDecoder | None:
    """The link decoder for an interface's ARPHRD type (None: Ethernet frames as is).

    Raises:
        LiveCaptureError: a hardware type whose frames are not read.
    """
    linktype = HARDWARE_LINKTYPES.get(hatype)
    if linktype is None:
        raise LiveCaptureError(f"interfaces of hardware type {hatype} are not supported "
                               "(Ethernet, tunnels with raw IP, 802.11 monitor/radiotap)")
    return link_decoder(linktype)


class LiveCaptureError(MudguardError):
    """The interface could not be opened for capture."""

    key = "capture_failed"


class LiveCapture:
    """An ``AF_PACKET`` socket on one interface, open from construction (errors come early)."""

    def __init__(self, interface: str, *, netns: str | None = None) -> None:
        try:
            with in_netns(netns):
                self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                          socket.htons(ETH_P_ALL))
        except PermissionError as exc:
            raise LiveCaptureError("capturing frames needs CAP_NET_RAW") from exc
        try:
            self.sock.bind((interface, ETH_P_ALL))
            self.decoder = decoder_for_hardware(self.sock.getsockname()[3])
        except OSError as exc:
            self.sock.close()
            raise LiveCaptureError(f"cannot capture on {interface!r}: {exc.strerror}") from exc
        except LiveCaptureError:
            self.sock.close()
            raise

    def frames(self, seconds: float, *, max_frames: int = 10_000_000
               ) -> Iterator[tuple[float, bytes, int]]:
        """Yield the frames seen for ``seconds`` (at most ``max_frames``), then close."""
        if not 0 < seconds <= 7 * 24 * 3600:
            raise ValueError("seconds must be in (0, one week]")
        deadline = time.monotonic() + seconds
        buffer = bytearray(SNAP)
        try:
            for _ in range(max_frames):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.sock.settimeout(min(left, 0.5))
                try:
                    length = self.sock.recv_into(buffer, SNAP, socket.MSG_TRUNC)  # real length
                except TimeoutError:
                    continue
                raw = bytes(buffer[:min(length, SNAP)])
                frame = raw if self.decoder is None else self.decoder.ethernet(raw)
                if frame is not None:
                    yield time.time(), frame, length
        finally:
            self.sock.close()


def live_frames(interface: str, seconds: float, *, netns: str | None = None,
                max_frames: int = 10_000_000) -> Iterator[tuple[float, bytes, int]]:
    """Yield the frames seen on ``interface`` for ``seconds`` (at most ``max_frames``).

    Raises:
        LiveCaptureError: no such interface, or no CAP_NET_RAW.
    """
    return LiveCapture(interface, netns=netns).frames(seconds, max_frames=max_frames)
