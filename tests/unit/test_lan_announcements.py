"""Link announcements (rtnetlink RTM_NEWLINK, built with pyroute2) name the LAN bridge's
ports to isolate: new ports and ports whose isolation was turned off, nothing else."""

from __future__ import annotations


def test_link_announcements_name_only_the_bridges_unisolated_ports() -> None:
    """``ports_to_isolate`` reads real rtnetlink messages (built with pyroute2)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    from mudguard.enforce.lan import ports_to_isolate

    def announce(name: str, master: int | None, isolated: int | None,
                 family: int = 0) -> bytes:
        msg = ifinfmsg()
        msg["header"]["type"] = 16  # RTM_NEWLINK
        msg["family"] = family
        msg["index"] = 9
        attrs: list[list[object]] = [["IFLA_IFNAME", name]]
        if master is not None:
            attrs.append(["IFLA_MASTER", master])
        if isolated is not None and family == 7:
            attrs.append(["IFLA_PROTINFO", {"attrs": [["IFLA_BRPORT_ISOLATED", isolated]]}])
        msg["attrs"] = attrs
        msg.encode()
        return bytes(msg.data)

    data = (announce("new0", 4, None) + announce("done0", 4, 1, family=7)
            + announce("open0", 4, 0, family=7) + announce("other0", 5, None)
            + announce("free0", None, None) + announce("bad name!", 4, None))
    assert ports_to_isolate(data, 4) == ["new0", "open0"]
    assert ports_to_isolate(b"", 4) == []
