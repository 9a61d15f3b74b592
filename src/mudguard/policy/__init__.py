"""Policy: decide what each device may do, and compile it (pure, no I/O)."""

from mudguard.policy._evaluate import DEFAULT_DROP, Flow, NameMap, Verdict, evaluate
from mudguard.policy._model import (
    DeviceFacts,
    DevicePolicy,
    Grant,
    GrantKind,
    HomeContext,
    LifecycleState,
    PeerKind,
    Rule,
)
from mudguard.policy._names import TABLE, device_chain, device_id, dns_set_name

__all__ = [
    "DEFAULT_DROP",
    "TABLE",
    "DeviceFacts",
    "DevicePolicy",
    "Flow",
    "Grant",
    "GrantKind",
    "HomeContext",
    "LifecycleState",
    "NameMap",
    "PeerKind",
    "Rule",
    "Verdict",
    "device_chain",
    "device_id",
    "dns_set_name",
    "evaluate",
]
