"""Where the benchmarks find their inputs.

Small inputs (MUD files, WiFi handshakes) are the test corpus inside the repository,
``tests/data/corpus``. The large one, the MADEA smart-home night (16 pcapng captures,
320,000 packets, 48.5 MB), is not in the repository; no test uses it. A benchmark finds
it in the folder named by ``$MUDGUARD_BIG_CORPUS``, else in ``../shared/corpus`` beside
the repository, and exits (status 1) with a message saying how to get it when it is missing.

The folder may be laid out like the test corpus (``pcap/madea-smarthome/``), be a clone
of the upstream repository (``dataset/traffic/monitoring_traffic/``) or hold the 16
files itself. Each file is checked against its SHA-256, so figures are always measured
on the same bytes. Not part of the test suite.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMALL_CORPUS = REPO / "tests" / "data" / "corpus"
BIG_CORPUS_VARIABLE = "MUDGUARD_BIG_CORPUS"
DEFAULT_BIG_CORPUS = REPO.parent / "shared" / "corpus"
MADEA_REPOSITORY = "https://github.com/sprout-uci/madea"
MADEA_COMMIT = "6bd5e07471ce7bf55f08d9adb8e7503d96b5544e"
MADEA_UPSTREAM_FOLDER = "dataset/traffic/monitoring_traffic"
MADEA_LAYOUTS = ("pcap/madea-smarthome", MADEA_UPSTREAM_FOLDER, ".")

# The night in capture order (``ls`` order is not chronological), with each file's SHA-256.
MADEA_NIGHT: tuple[tuple[str, str], ...] = (
    ("monitoring_2023-6-12_21_50_58.cap",
     "cee03c51c2e32628936f0a51dbfb455a947da4a1da22e27563fa930bcee3a318"),
    ("monitoring_2023-6-12_22_15_49.cap",
     "949f1e8c81830075fb76ffcaf7b08568d78d9dffe3722a92eb3c5b037787eb29"),
    ("monitoring_2023-6-12_22_34_51.cap",
     "bfd8755cd895997e90b396b50449eeb06c24d93cb20c2aefc806059a12ec62a2"),
    ("monitoring_2023-6-12_22_59_41.cap",
     "72aea51cbb63285296e593c89dfbb08dcd44bb57dcdba6362ec16c79542cf804"),
    ("monitoring_2023-6-12_23_21_33.cap",
     "88e6bc7bd616f6f2c2bb2d3cdfded1292ca17b6107a8427a321f210b52124bc2"),
    ("monitoring_2023-6-12_23_41_58.cap",
     "30a297ad69366e4077d64860615105794a9881b999bab9aee75d954758216327"),
    ("monitoring_2023-6-13_0_8_15.cap",
     "b084508a989e7ab01f46e4852e7a715da39dd9b785154cd7a15348ce45266a70"),
    ("monitoring_2023-6-13_0_28_38.cap",
     "4b6fbc5380091a4917485c878f77285cbdd42688fa8744f524dab74055777922"),
    ("monitoring_2023-6-13_0_55_26.cap",
     "fdc21b5d757149ad4737720e254a1630ffb9ee924a2f65e0e84a4f545be5d5bd"),
    ("monitoring_2023-6-13_1_23_16.cap",
     "279474a6f30104ac44baa68b8eadb091b25bbd0104feeea0d27f72861d25d90a"),
    ("monitoring_2023-6-13_1_44_49.cap",
     "6f40f1a51497a64452c3bb1bbd602590fc58f216ded288002ee4ec9ad605dc47"),
    ("monitoring_2023-6-13_2_7_15.cap",
     "08bdbbae3576ed05f208d41d176e73ee292f6df754e49319b967a173bf59d659"),
    ("monitoring_2023-6-13_2_28_38.cap",
     "de5c585fdf33649a1d1a77b5860fdb22c83506a19a0b616514657c1f900f31e8"),
    ("monitoring_2023-6-13_3_0_58.cap",
     "ce1d34b912a628673549fea8246b613df41208977eab34f0acd9af3ecec23e81"),
    ("monitoring_2023-6-13_3_32_51.cap",
     "45992404454ad1dca3b72b2f90b40404147fab425570bce93bc5c422596151f5"),
    ("monitoring_2023-6-13_4_0_57.cap",
     "6579607df2505d7579904a0509b4962d672f966453eaebed236c1d64ceac832b"),
)


class MissingData(SystemExit):
    """The large input is not there (or not the expected bytes). Uncaught, Python prints
    the message (how to get the data) on stderr and exits with status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def big_corpus_root() -> Path:
    """The folder searched for the large captures: ``$MUDGUARD_BIG_CORPUS`` or the default."""
    value = os.environ.get(BIG_CORPUS_VARIABLE, "").strip()
    return Path(value).expanduser() if value else DEFAULT_BIG_CORPUS


def how_to_get_madea(root: Path, problem: str) -> str:
    """The message a benchmark prints when the MADEA night is missing or altered."""
    source = "$" + BIG_CORPUS_VARIABLE if os.environ.get(BIG_CORPUS_VARIABLE) else "default"
    return (
        f"{problem}\n"
        f"Looked in {root} ({source}) for "
        + ", ".join(f"{layout}/" for layout in MADEA_LAYOUTS[:-1]) + " or the folder itself.\n"
        "This benchmark needs the MADEA smart-home night (16 pcapng captures, 48.5 MB), which\n"
        "is not in the repository. Get it from the upstream repository at the commit the\n"
        "figures were measured on, then point the benchmark at it:\n"
        f"  git clone --filter=blob:none --sparse {MADEA_REPOSITORY} madea\n"
        f"  git -C madea sparse-checkout set {MADEA_UPSTREAM_FOLDER}\n"
        f"  git -C madea checkout {MADEA_COMMIT}\n"
        f"  export {BIG_CORPUS_VARIABLE}=$PWD/madea\n"
        f"(or place the files in {DEFAULT_BIG_CORPUS}/pcap/madea-smarthome/). The files and\n"
        "their SHA-256 are listed in bench/bench_data.py (MADEA_NIGHT)."
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def madea_night(root: Path | None = None) -> list[Path]:
    """The 16 captures of the MADEA night in capture order, checked; ``MissingData`` if not."""
    root = big_corpus_root() if root is None else root
    folders = [root / layout for layout in MADEA_LAYOUTS]
    folder = next((f for f in folders if (f / MADEA_NIGHT[0][0]).is_file()), None)
    if folder is None:
        raise MissingData(how_to_get_madea(root, "The MADEA captures are missing."))
    missing = [name for name, _ in MADEA_NIGHT if not (folder / name).is_file()]
    if missing:
        raise MissingData(how_to_get_madea(
            root, f"{len(missing)} of the 16 MADEA captures are missing in {folder}: "
                  + ", ".join(missing)))
    altered = [name for name, sha in MADEA_NIGHT if _sha256(folder / name) != sha]
    if altered:
        raise MissingData(how_to_get_madea(
            root, f"MADEA captures in {folder} differ from commit {MADEA_COMMIT[:7]}: "
                  + ", ".join(altered)))
    return [folder / name for name, _ in MADEA_NIGHT]

