"""mDNS and SSDP announcements read off the LAN: identification clues, no Python per packet.

Devices announce themselves by multicast: mDNS/DNS-SD (224.0.0.251 / ff02::fb, UDP
5353) and SSDP (239.255.255.250, UDP 1900: NOTIFY, M-SEARCH and their answers). The
bridge delivers every such frame to the gateway itself; a packet socket on the LAN
interface sees it there before nftables' input verdict, so a device on the home
default or learning (whose rules may not accept mDNS/SSDP to the gateway) is read
all the same. The socket carries a classic BPF filter (``tcpdump -dd 'udp port 5353
or udp port 1900'``, unfragmented IPv4 or IPv6 without extension headers, cut at
``SNAP`` bytes): the kernel wakes the daemon for nothing else. Frames the gateway
sends itself are skipped.

A hostile device can flood such frames: ``AnnouncementSniffer.drain`` reads at most
``frames_per_second`` frames per second overall; past it, it says so and the daemon
stops reading until the next second (the kernel then drops what overflows the
socket's buffer), so CPU spent is bounded whatever arrives. Per-device rates and
memory bounds are ``identify.live.LiveEvidence``'s.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from mudguard.discovery.dhcp_sniff import _attach_filter

log = logging.getLogger(__name__)

SNAP = 4096  # bytes kept of a frame: an mDNS or SSDP message on an Ethernet LAN
FRAMES_PER_SECOND = 200
_PACKET_OUTGOING = 4
_ETH_P_ALL = 0x0003

# ``tcpdump -i lo -dd 'udp port 5353 or udp port 1900'``, accepting SNAP bytes.
_BPF_ANNOUNCEMENTS = (
    (0x28, 0, 0, 12), (0x15, 0, 7, 0x86DD),      # IPv6?
    (0x30, 0, 0, 20), (0x15, 0, 18, 17),         # next header UDP
    (0x28, 0, 0, 54), (0x15, 15, 0, 5353), (0x15, 14, 0, 1900),   # source port
    (0x28, 0, 0, 56), (0x15, 12, 11, 5353),      # destination port (1900 below)
    (0x15, 0, 12, 0x0800),                       # IPv4?
    (0x30, 0, 0, 23), (0x15, 0, 10, 17),         # protocol UDP
    (0x28, 0, 0, 20), (0x45, 8, 0, 0x1FFF),      # not a later fragment
    (0xB1, 0, 0, 14),                            # x = IP header length
    (0x48, 0, 0, 14), (0x15, 4, 0, 5353), (0x15, 3, 0, 1900),     # source port
    (0x48, 0, 0, 16), (0x15, 1, 0, 5353), (0x15, 0, 1, 1900),     # destination port
    (0x06, 0, 0, SNAP), (0x06, 0, 0, 0),         # accept / drop
)


class AnnouncementSniffer:
    """mDNS and SSDP frames on one interface (AF_PACKET + BPF; needs CAP_NET_RAW)."""

    def __init__(self, interface: str, on_frame: Callable[[bytes], object], *,
                 frames_per_second: int = FRAMES_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Open the socket (the filter attached before binding: nothing else is ever
        queued); each frame a device sent goes to ``on_frame``. Raises ``OSError``."""
        self.interface = interface
        self.on_frame = on_frame
        self.frames_per_second = frames_per_second
        self.clock = clock
        self.read = 0
        self._window = -1
        self._budget = frames_per_second
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            _attach_filter(self._sock, _BPF_ANNOUNCEMENTS)
            self._sock.bind((interface, _ETH_P_ALL))
        except OSError:
            self._sock.close()
            raise

    @classmethod
    def open(cls, interface: str,
             on_frame: Callable[[bytes], object]) -> AnnouncementSniffer | None:
        """The sniffer, or None (one log line) without the capability or interface."""
        try:
            return cls(interface, on_frame)
        except OSError as exc:
            log.error("mDNS/SSDP identification off on %s: %s", interface,
                      exc.strerror or exc)
        return None

    def fileno(self) -> int:
        """The socket's descriptor (for ``loop.add_reader``)."""
        return self._sock.fileno()

    def drain(self, max_frames: int = 64) -> float | None:
        """Read the frames already queued, without waiting, within this second's budget.
        None when the queue is empty; else the seconds to wait before reading again
        (the budget is spent: the caller stops reading until then)."""
        for _ in range(max_frames):
            now = self.clock()
            window = int(now)
            if window != self._window:
                self._window, self._budget = window, self.frames_per_second
            if self._budget <= 0:
                return max(0.01, window + 1 - now)
            try:
                frame, address = self._sock.recvfrom(SNAP, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return None
            self._budget -= 1
            if address[2] == _PACKET_OUTGOING:
                continue
            self.read += 1
            try:
                self.on_frame(frame)
            except Exception:  # a parser bug must not stop discovery
                log.exception("reading an announcement on %s failed", self.interface)
        return None

    @property
    def closed(self) -> bool:
        """Whether the socket was closed."""
        return self._sock.fileno() < 0

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> AnnouncementSniffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
