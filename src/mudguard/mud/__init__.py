"""MUD files (RFC 8520): the typed model, parsing with normalisation, and validation.

Pure: no I/O. Fetching lives in ``mudguard.mud.fetch`` and signature checks in
``mudguard.mud.signature``; both are adapters around this core.
"""

from mudguard.mud._describe import describe_ace, describe_peer, describe_policy, describe_service
from mudguard.mud._model import (
    GATEWAY_SERVICES,
    Ace,
    Acl,
    AclType,
    Direction,
    EthMatch,
    Extension,
    Finding,
    Forwarding,
    IcmpMatch,
    IpMatch,
    Limit,
    Matches,
    MudFile,
    MudMatch,
    ParseResult,
    PortMatch,
    PortOperator,
    Severity,
    TransportMatch,
    ace_limits,
    render_path,
    service_ports,
)
from mudguard.mud._parse import DRAFT_CONTROLLER_CLASSES, MAX_MUD_BYTES, parse_mud

__all__ = [
    "DRAFT_CONTROLLER_CLASSES",
    "GATEWAY_SERVICES",
    "MAX_MUD_BYTES",
    "Ace",
    "Acl",
    "AclType",
    "Direction",
    "EthMatch",
    "Extension",
    "Finding",
    "Forwarding",
    "IcmpMatch",
    "IpMatch",
    "Limit",
    "Matches",
    "MudFile",
    "MudMatch",
    "ParseResult",
    "PortMatch",
    "PortOperator",
    "Severity",
    "TransportMatch",
    "ace_limits",
    "describe_ace",
    "describe_peer",
    "describe_policy",
    "describe_service",
    "parse_mud",
    "render_path",
    "service_ports",
]
