"""Who made a device, and which model it is, as the owner is told (pure).

Theory of operation. Several things name a device's maker and model, and they do not
deserve the same trust. ``device_identity`` takes each and returns the first that
says something, with where it came from:

1. the MUD file's ``mfg-name``/``model-name`` (a signed file before an unsigned one:
   the source says which);
2. the owner's label (RFC 9238 QR: company, model or product) or the device's
   802.1AR certificate (the subject's ``O=``);
3. what the gateway recorded when the device joined (the label the owner scanned at
   onboarding, or the maker ``mudguard.identify`` inferred from its DHCP clues);
4. the MAC's OUI in a maintained registry (Wireshark's ``manuf``), unless the MAC is
   locally administered or the registered organisation is a module or chip maker
   (Espressif, Tuya, …: the *platform*, not the maker; ``KnowledgeBase.oui_claims``).

``signer_organisation`` turns a signer's certificate name (RFC 4514) into the
organisation the owner knows (``O=``), never the raw distinguished name.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, NamedTuple

from mudguard.devices._model import Device, MudSource, SignatureStatus
from mudguard.identify.knowledge import KnowledgeBase, OuiRegistry, short_organisation
from mudguard.mud import MudFile

MAX_TEXT = 128


class IdentitySource(StrEnum):
    """Where a device's maker and model came from (strongest first)."""

    MUD_SIGNED = "mud_signed"
    MUD = "mud"
    LABEL = "label"
    CERTIFICATE = "certificate"
    IDENTIFIED = "identified"
    OUI = "oui"


class Identity(NamedTuple):
    """``(maker, model, source)``: None where nothing says."""

    maker: str | None
    model: str | None
    source: IdentitySource | None

    def as_dict(self) -> dict[str, str | None]:
        """The JSON form (API)."""
        return {"maker": self.maker, "model": self.model,
                "source": self.source.value if self.source else None}


def device_identity(device: Device, mud: MudFile | None, cert: Any = None,
                    label: Any = None, oui_registry: OuiRegistry | None = None,
                    knowledge: KnowledgeBase | None = None) -> Identity:
    """The device's maker and model and their source (see the module docstring).

    ``cert``: a ``DeviceCertificate`` (its ``subject``); ``label``: a ``QrRecord``
    (``company``, ``model``, ``product``). The OUI is used only with ``knowledge``
    (which tells a module maker from a device maker).
    """
    candidates: list[tuple[str | None, str | None, IdentitySource]] = []
    if mud is not None:
        signed = device.signature_status is SignatureStatus.SIGNED_VALID
        candidates.append((mud.mfg_name, mud.model_name,
                           IdentitySource.MUD_SIGNED if signed else IdentitySource.MUD))
    if label is not None:
        candidates.append((getattr(label, "company", None),
                           getattr(label, "model", None) or getattr(label, "product", None),
                           IdentitySource.LABEL))
    if cert is not None:
        candidates.append((dn_attribute(getattr(cert, "subject", None), "O"), None,
                           IdentitySource.CERTIFICATE))
    recorded = IdentitySource.LABEL if device.mud_source is MudSource.QR \
        else IdentitySource.IDENTIFIED
    candidates.append((device.manufacturer, device.model, recorded))
    if oui_registry is not None and knowledge is not None:
        candidates.append((oui_maker(device.mac, oui_registry, knowledge), None,
                           IdentitySource.OUI))
    maker = model = None
    source: IdentitySource | None = None
    for cand_maker, cand_model, cand_source in candidates:
        cand_maker, cand_model = _clean(cand_maker), _clean(cand_model)
        if maker is None and cand_maker is not None:
            maker, source = cand_maker, cand_source
        if model is None and cand_model is not None:
            model = cand_model
            source = source or cand_source
    return Identity(maker, model, source)


def oui_maker(mac: str, registry: OuiRegistry, knowledge: KnowledgeBase) -> str | None:
    """The maker the MAC's registered prefix names; None for a locally administered
    (randomised) MAC, an unregistered prefix, or a module/chip maker (a platform)."""
    try:
        raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError:
        return None
    if len(raw) != 6 or raw[0] & 0x02:
        return None
    organisation = registry.organisation(raw)
    if organisation is None:
        return None
    platform, _claims = knowledge.oui_claims(organisation)
    return None if platform is not None else short_organisation(organisation)


_RDN = re.compile(r"(?:^|(?<!\\),)\s*([A-Za-z0-9.]+)=((?:\\.|[^,\\])*)")


def dn_attribute(dn: str | None, attribute: str) -> str | None:
    """One attribute's value (the first) of an RFC 4514 name, unescaped; None if absent."""
    if not dn:
        return None
    for name, value in _RDN.findall(dn):
        if name.upper() == attribute.upper():
            return _clean(re.sub(r"\\(.)", r"\1", value))
    return None


def signer_organisation(signer: str | None) -> str | None:
    """The organisation that signed a MUD file, as the owner knows it: the ``O=`` of the
    signer's certificate name, else its ``CN=``, else the text itself (not a name)."""
    if not signer:
        return None
    if "=" not in signer:
        return _clean(signer)
    return dn_attribute(signer, "O") or dn_attribute(signer, "CN") or _clean(signer)


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())[:MAX_TEXT]
    return text if text and text.isprintable() else None
