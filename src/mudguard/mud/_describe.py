"""Plain-language descriptions of what a MUD file allows, for owners (CLI and portal).

Pure: returns strings. Every string that comes from the MUD file is passed
through as data; escaping is the renderer's job (Jinja2 autoescape, Rich markup
escaping).
"""

from __future__ import annotations

from mudguard.mud._model import (
    Ace,
    Direction,
    Forwarding,
    Matches,
    MudFile,
    PortMatch,
    ace_limits,
)

_WELL_KNOWN_PORTS = {
    (6, 443): "HTTPS", (6, 80): "HTTP", (17, 53): "DNS", (6, 53): "DNS", (17, 123): "NTP",
    (17, 67): "DHCP", (17, 68): "DHCP", (6, 8883): "MQTT over TLS", (6, 1883): "MQTT",
    (17, 1900): "SSDP", (17, 5353): "mDNS", (6, 631): "IPP printing", (6, 9100): "raw printing",
    (17, 547): "DHCPv6", (6, 22): "SSH", (6, 23): "Telnet",
}
_PROTOCOLS = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}


def describe_peer(matches: Matches, direction: Direction) -> str:
    """Who is on the other side of a flow, in words."""
    mud = matches.mud
    ip = matches.ip
    if mud is not None:
        if mud.same_manufacturer:
            return "other devices from the same maker"
        if mud.manufacturer:
            return f"devices made by {mud.manufacturer}"
        if mud.model:
            return f"devices of model {mud.model}"
        if mud.my_controller:
            return "the controller you assign to it"
        if mud.controller:
            return f"controllers of class {mud.controller}"
        if mud.local_networks and not (ip and (ip.src_network or ip.dst_network)):
            return "anything on your home network"
    if ip is not None:
        name = ip.dst_dnsname if direction is Direction.FROM_DEVICE else ip.src_dnsname
        if name:
            return name
        network = ip.dst_network if direction is Direction.FROM_DEVICE else ip.src_network
        if network:
            return f"addresses {network}"
    return "anyone"


def describe_service(matches: Matches, direction: Direction) -> str:
    """The protocol and port of a flow, in words ("HTTPS", "UDP port 5683")."""
    t = matches.transport
    if t is not None:
        # The service port is the far side's: destination going out, source coming in.
        port: PortMatch | None = t.dst_port if direction is Direction.FROM_DEVICE else t.src_port
        if port is None:
            port = t.src_port if direction is Direction.FROM_DEVICE else t.dst_port
        proto = "TCP" if t.protocol == 6 else "UDP"
        if port is None:
            return f"any {proto} port"
        if port.port is not None and (t.protocol, port.port) in _WELL_KNOWN_PORTS and \
                port.describe() == str(port.port):
            return _WELL_KNOWN_PORTS[(t.protocol, port.port)]
        return f"{proto} port {port.describe()}"
    if matches.icmp is not None:
        kind = "ICMP" if matches.protocol == 1 else "ICMPv6"
        if matches.icmp.type is not None:
            return f"{kind} type {matches.icmp.type}"
        return kind
    number = matches.protocol
    if number is not None:
        return _PROTOCOLS.get(number, f"IP protocol {number}")
    if matches.eth is not None and matches.eth.ethertype is not None:
        return f"Ethernet type 0x{matches.eth.ethertype:04x}"
    return "any traffic"


def describe_ace(ace: Ace, direction: Direction) -> str:
    """One sentence for one ACE, e.g. "may talk to api.example.com over HTTPS"."""
    verb = {Forwarding.ACCEPT: "may", Forwarding.DROP: "may not",
            Forwarding.REJECT: "may not"}[ace.action]
    peer = describe_peer(ace.matches, direction)
    service = describe_service(ace.matches, direction)
    initiated = ace.matches.transport.direction_initiated if ace.matches.transport else None
    if direction is Direction.FROM_DEVICE:
        sentence = f"{verb} send to {peer} ({service})"
    else:
        sentence = f"{verb} receive from {peer} ({service})"
    if initiated is Direction.FROM_DEVICE:
        sentence += ", connections opened by the device"
    elif initiated is Direction.TO_DEVICE:
        sentence += ", connections opened by the other side"
    limits = ace_limits(ace, direction)
    if any(limit.never for limit in limits) or (limits and ace.action is Forwarding.ACCEPT):
        # What the gateway enforces, not what the file hoped for (``ace_limits``).
        fields = ", ".join(sorted({limit.field.split(".")[-1].split(":")[-1]
                                   for limit in limits}))
        sentence += f" (not enforced as written ({fields}): allows nothing)"
    return sentence


def describe_policy(mud: MudFile) -> dict[str, list[str]]:
    """Every ACE of both directions in words, de-duplicated, in file order."""
    out: dict[str, list[str]] = {}
    for direction in Direction:
        seen: list[str] = []
        for ace in mud.policy_aces(direction):
            text = describe_ace(ace, direction)
            if text not in seen:
                seen.append(text)
        out[direction.value] = seen
    return out
