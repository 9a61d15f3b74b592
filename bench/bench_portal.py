"""Portal figures: reading a label from a phone photo, and page latency as a home grows.

1. Label photos: a label pasted into JPEG "photos" of 3 and 12 megapixels. Baseline in the
   same run: decoding the JPEG alone (Pillow), which any upload pays anyway.
2. Pages and API with 10, 100 and 1,000 devices (each with 20 events, a tenth quarantined):
   median latency over in-process requests. Baseline in the same run: `/api/guidance`
   (no database), i.e. the framework's own cost per request.

Run: .venv/bin/python bench/bench_portal.py
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mudguard.devices import Device, EventKind
from mudguard.devices.service import DeviceService
from mudguard.discovery.qr import QrRecord
from mudguard.labels import label_png, read_label
from mudguard.policy import LifecycleState
from mudguard.portal import PortalServices, PortalSettings, create_app
from mudguard.store import Store

RECORD = QrRecord(mud_url="https://mud.example.com/devices/lightbulb-2000.json",
                  company="Example Lighting", model="LB-2000", mac="00:11:22:33:44:55")


def _median_ms(action, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _photo(width: int, height: int) -> bytes:
    label = Image.open(io.BytesIO(label_png(RECORD))).convert("RGB")
    scale = width / 3 / label.width
    label = label.resize((int(label.width * scale), int(label.height * scale)))
    photo = Image.new("RGB", (width, height), (196, 190, 180))
    photo.paste(label.rotate(5, expand=True, fillcolor=(196, 190, 180)),
                (width // 3, height // 3))
    out = io.BytesIO()
    photo.save(out, format="JPEG", quality=88)
    return out.getvalue()


def bench_labels() -> None:
    print("label photo             | JPEG decode only (ms) | read_label (ms) | ratio")
    print("------------------------|-----------------------|-----------------|------")
    for name, (w, h) in (("3 Mpx (2048x1536)", (2048, 1536)),
                         ("12 Mpx (4000x3000)", (4000, 3000))):
        data = _photo(w, h)
        assert read_label(data) == RECORD
        base = _median_ms(lambda d=data: Image.open(io.BytesIO(d)).convert("L"), 5)
        full = _median_ms(lambda d=data: read_label(d), 5)
        print(f"{name:<24}| {base:>21.1f} | {full:>15.1f} | {full / base:.1f}x")


def _home(tmp: Path, count: int) -> TestClient:
    store = Store(tmp / f"home-{count}.db")
    now = datetime.now(UTC)
    with store.transaction():
        for i in range(count):
            mac = f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
            state = LifecycleState.QUARANTINED if i % 10 == 0 else LifecycleState.PROFILED
            store.save_device(Device(mac=mac, state=state, name=f"device {i}",
                                     manufacturer="Example", first_seen=now, last_seen=now))
            for j in range(20):
                kind = EventKind.VIOLATION if j == 0 and state is LifecycleState.QUARANTINED \
                    else EventKind.SEEN
                store.add_event(kind, now - timedelta(minutes=j * 30), mac,
                                {"peer": "198.51.100.1", "port": 443, "flows_allowed": 3})
    services = PortalServices(devices=DeviceService(store=store))
    client = TestClient(create_app(services, PortalSettings(state_dir=tmp / f"p{count}")),
                        base_url="http://portal.test")
    client.post("/api/setup", json={"username": "owner", "password": "bench password 1"})
    client.post("/api/session", json={"username": "owner", "password": "bench password 1"})
    return client


def bench_pages() -> None:
    paths = ("/api/guidance", "/devices", "/api/devices", "/alerts",
             "/devices/02:00:00:00:00:05")
    print()
    print("devices | " + " | ".join(f"{p} (ms)" for p in paths) + " | /devices vs baseline")
    print("--------|" + "|".join("-" * (len(p) + 7) for p in paths) + "|---------------------")
    with tempfile.TemporaryDirectory() as tmp:
        for count in (10, 100, 1000):
            client = _home(Path(tmp), count)
            for path in paths:  # warm-up (templates compiled, caches filled)
                for _ in range(3):
                    assert client.get(path).status_code == 200, path
            times = [_median_ms(lambda p=path, c=client: c.get(p), 15) for path in paths]
            cells = " | ".join(f"{t:>{len(p) + 5}.1f}" for t, p in zip(times, paths, strict=True))
            print(f"{count:>7} | {cells} | {times[1] / times[0]:.1f}x")


if __name__ == "__main__":
    bench_labels()
    bench_pages()
