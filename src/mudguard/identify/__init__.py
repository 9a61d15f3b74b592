"""Identify a device without a MUD file: maker, model, kind, from passive clues.

``parse`` (packet payloads → facts), ``knowledge`` (the shipped knowledge base and
the OUI registry, compiled), ``registry`` (Home Assistant's discovery matchers,
compiled and matched), ``decide`` (clues → an explained identification) are pure;
``capture`` is the adapter that reads captures and the data files;
``registry_import`` is the maintainer's tool that builds ``discovery_registry.json``
from a Home Assistant wheel.
"""
