"""The baseline: traffic every managed device needs to function, in ONE place.

Every device that is not forgotten gets exactly these rules, whatever its MUD
file says, and nothing else from here:

- DHCPv4 to the gateway (UDP 68 -> 67, from 0.0.0.0 before it has a lease);
- DHCPv6 to the gateway (UDP 546 -> 547);
- DNS to the gateway (UDP and TCP 53): the gateway is the home's resolver, and
  resolving through it is what fills the device's DNS-name sets;
- ICMPv6 router solicitation and neighbour solicitation/advertisement to the
  gateway (RFC 4861), from link-local or unspecified addresses too;
- multicast listener reports to the gateway's input, from any source: MLDv2
  reports (ICMPv6 143, RFC 3810 §5.2.13 allows ``::`` while the device's address
  is tentative), MLDv1 reports and done messages (ICMPv6 131 and 132, RFC 2710:
  older IPv6 stacks still send them, to the group they join) and IGMP (protocol 2;
  RFC 3376 §4.2.13 allows 0.0.0.0 before an address). A device sends them while it
  joins the network, before its address is bound; dropping them at the source
  binding logged a deviation per join.

NTP is NOT baseline: a device reaches a time server only if its MUD file says so.
The README's "Baseline traffic" section mirrors this list; keep them in step.
"""

from __future__ import annotations

from typing import Final

from mudguard.mud import Direction, Forwarding, PortMatch, PortOperator
from mudguard.policy._model import PeerKind, Rule

UDP: Final = 17
TCP: Final = 6
ICMPV6: Final = 58
IGMP: Final = 2

ND_ROUTER_SOLICIT: Final = 133
ND_NEIGHBOR_SOLICIT: Final = 135
ND_NEIGHBOR_ADVERT: Final = 136
MLDV1_REPORT: Final = 131
MLDV1_DONE: Final = 132
MLDV2_REPORT: Final = 143


def _eq(port: int) -> PortMatch:
    return PortMatch(operator=PortOperator.EQ, port=port)


def _to_gateway(origin: str, **fields: object) -> Rule:
    return Rule(direction=Direction.FROM_DEVICE, action=Forwarding.ACCEPT,
                peer=PeerKind.GATEWAY, origin=origin, **fields)  # type: ignore[arg-type]


BASELINE_RULES: Final[tuple[Rule, ...]] = (
    _to_gateway("baseline/dhcpv4", family=4, protocol=UDP, src_port=_eq(68), dst_port=_eq(67),
                any_source=True),
    _to_gateway("baseline/dhcpv6", family=6, protocol=UDP, src_port=_eq(546), dst_port=_eq(547),
                any_source=True),
    *(_to_gateway(f"baseline/nd-{icmp_type}", family=6, protocol=ICMPV6, icmp_type=icmp_type,
                  any_source=True)
      for icmp_type in (ND_ROUTER_SOLICIT, ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT)),
    *(_to_gateway(origin, family=6, protocol=ICMPV6, icmp_type=icmp_type, any_source=True)
      for origin, icmp_type in (("baseline/mld-report", MLDV2_REPORT),
                                ("baseline/mldv1-report", MLDV1_REPORT),
                                ("baseline/mldv1-done", MLDV1_DONE))),
    _to_gateway("baseline/igmp", family=4, protocol=IGMP, any_source=True),
    _to_gateway("baseline/dns-udp", protocol=UDP, dst_port=_eq(53)),
    _to_gateway("baseline/dns-tcp", protocol=TCP, dst_port=_eq(53)),
)
"""The baseline, in the order the compiler emits it (``any_source`` rules first)."""


def baseline_rules() -> tuple[Rule, ...]:
    """The rules every managed (not forgotten) device gets: DHCP, DNS, ND and multicast
    listener reports to the gateway."""
    return BASELINE_RULES
