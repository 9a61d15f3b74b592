"""Per-device WiFi keys: one key per device, tied to its VLAN and policy (issue #5).

The pure core is ``mudguard.keys.core`` (passphrases, hostapd key file lines, WiFi
QR payloads, WPA2 PMK/PTK/MIC and handshake identification, the binding rule).
Adapters: ``hostapd`` (control socket, atomic files), ``ring`` (SQLite records),
``service`` (issue/revoke/bind), ``radius`` (wpa_psk_radius answers),
``capture`` (pcap reading), ``qr`` (images).
"""
