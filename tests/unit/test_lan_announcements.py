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


def test_slave_data_flags_and_broken_reads() -> None:
    """The flag in ``IFLA_LINKINFO`` slave data counts too; a read whose lengths do not add
    up is refused whole (None: the caller isolates every port)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    from mudguard.enforce.lan import ports_to_isolate

    def announce(name: str, isolated: int) -> bytes:
        msg = ifinfmsg()
        msg["header"]["type"] = 16  # RTM_NEWLINK
        msg["index"] = 11
        msg["attrs"] = [["IFLA_IFNAME", name], ["IFLA_MASTER", 4],
                        ["IFLA_LINKINFO", {"attrs": [
                            ["IFLA_INFO_SLAVE_KIND", "bridge"],
                            ["IFLA_INFO_SLAVE_DATA", {"attrs": [
                                ["IFLA_BRPORT_ISOLATED", isolated]]}]]}]]
        msg.encode()
        return bytes(msg.data)

    good = announce("shut0", 1) + announce("open1", 0)
    assert ports_to_isolate(good, 4) == ["open1"]
    assert ports_to_isolate(good[:-3], 4) is None  # the last message cut short
    broken = bytearray(good)
    broken[16 + 16] = 0xFF  # the first attribute claims more than its message holds
    assert ports_to_isolate(bytes(broken), 4) is None
