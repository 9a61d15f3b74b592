"""Per-device WiFi keys: one key per device, tied to its VLAN and policy (issue #5).

The pure core is ``mudguard.keys.core`` (passphrases, hostapd key file lines, WiFi
QR payloads, WPA/WPA2 PMK/PTK/MIC, the binding rule) with ``mudguard.keys.handshake``
(pairing EAPOL-Key messages as captures hold them, telling which key a handshake used).
Adapters: ``hostapd`` (control socket, atomic files), ``ring`` (SQLite records),
``service`` (issue/revoke/bind), ``radius`` (wpa_psk_radius answers),
``capture`` (pcap reading), ``qr`` (images).
"""
