#!/usr/bin/env bash
# Installs everything mudguard needs on a fresh Debian 12 machine; safe to run twice.
# apt packages: the real components the gateway drives (nftables, dnsmasq, hostapd, conntrack,
# tshark for captures, libwireshark-data for the OUI registry (manuf) of `mudguard identify`,
# freeradius-utils for radclient, chromium for the portal's browser tests, faketime for the
# doctor's wrong-clock test; debootstrap, systemd-container (systemd-nspawn) and python3-venv
# for the Debian package test: packaging/build-deb, tests/e2e/test_package.py).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(nftables libnftables1 dnsmasq-base iproute2 conntrack tshark libwireshark-data hostapd freeradius-utils iputils-ping chromium busybox tcpdump procps faketime isc-dhcp-client debootstrap systemd-container python3-venv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: need root to install: ${missing[*]} (run with sudo)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.mudguard-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi
