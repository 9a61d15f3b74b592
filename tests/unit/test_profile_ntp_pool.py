"""The learner's NTP pool rule (issue #16's false-alarm measurement): a device that used
one numbered name of an NTP Pool vendor zone is allowed the zone's four names, for NTP
only; nothing else is widened, and the option turns it off."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from mudguard.mud import Direction, parse_mud
from mudguard.policy import NameMap, decide
from mudguard.profile.core import (
    CaptureHome,
    LearnOptions,
    ObservedFlow,
    check_flows,
    device_facts,
    home_context,
    learn_mud_from_flows,
)

MAC = "d0:c5:d3:90:54:73"
IP = "192.168.1.40"
HOME = CaptureHome(device=bytes.fromhex(MAC.replace(":", "")), device_ips=(IP,),
                   lan_prefixes=("192.168.1.0/24",), gateway_ips=("192.168.1.1",))


def flow(dst: str, name: str | None, protocol: int = 17, port: int = 123) -> ObservedFlow:
    return ObservedFlow(device=MAC, direction=Direction.FROM_DEVICE, family=4, src=IP, dst=dst,
                        protocol=protocol, src_port=40000, dst_port=port, icmp_type=None,
                        icmp_code=None, packets=1, bytes=90, first_seen=0.0, last_seen=0.0,
                        remote_name=name)


def learned(flows: list[ObservedFlow], **options: bool) -> tuple[set[str], list[str]]:
    """(the learned names, the later flows the locked profile drops)."""
    doc = learn_mud_from_flows(flows, HOME, LearnOptions(mud_url="https://l.example/a.json",
                                                         **options), 0.0)
    mud = parse_mud(json.dumps(doc).encode()).mud
    assert mud is not None
    context = home_context(HOME, mud.mud_url)
    policy = decide(device_facts(HOME, mud.mud_url), mud, (), context, now=datetime.now(UTC))
    later = [flow("198.51.100.7", "0.irobot.pool.ntp.org"),
             flow("198.51.100.8", "0.irobot.pool.ntp.org", protocol=6, port=443),
             flow("198.51.100.9", "0.other.pool.ntp.org")]
    names = NameMap.build([(f.remote_name or "", f.dst) for f in later])
    dropped = [d.flow.dst for d in check_flows(policy, later, context, names)]
    return set(mud.dns_names()), dropped


def test_one_pool_name_allows_its_zones_four_names_for_ntp_only() -> None:
    names, dropped = learned([flow("203.0.113.5", "2.irobot.pool.ntp.org")])
    assert names == {f"{n}.irobot.pool.ntp.org" for n in range(4)}
    assert dropped == ["198.51.100.8", "198.51.100.9"]  # HTTPS to it, another zone


def test_without_the_option_the_next_pool_name_is_a_deviation() -> None:
    names, dropped = learned([flow("203.0.113.5", "2.irobot.pool.ntp.org")],
                             ntp_pool_siblings=False)
    assert names == {"2.irobot.pool.ntp.org"}
    assert "198.51.100.7" in dropped


def test_other_names_and_ports_get_no_siblings() -> None:
    names, _ = learned([flow("203.0.113.5", "pool.ntp.org"),
                        flow("203.0.113.6", "2.irobot.pool.ntp.org", protocol=6, port=443),
                        flow("203.0.113.7", "2.time.example.com")])
    assert names == {"pool.ntp.org", "2.irobot.pool.ntp.org", "2.time.example.com"}
