"""The benchmarks' large input lives outside the repository: ``bench/bench_data.py``
finds it through ``$MUDGUARD_BIG_CORPUS`` (or its default beside the repository) and,
when it is missing or altered, stops with a message that says how to get it. No test
needs the data itself."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import CORPUS, REPO


def bench_data() -> ModuleType:
    """``bench/bench_data.py``, loaded the way a benchmark script sees it."""
    spec = importlib.util.spec_from_file_location("bench_data", REPO / "bench" / "bench_data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_inputs_are_the_test_corpus() -> None:
    assert bench_data().SMALL_CORPUS == CORPUS


def test_the_variable_names_the_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = bench_data()
    monkeypatch.setenv("MUDGUARD_BIG_CORPUS", str(tmp_path))
    assert data.big_corpus_root() == tmp_path
    monkeypatch.delenv("MUDGUARD_BIG_CORPUS")
    default = data.big_corpus_root()  # the documented default: beside the repository
    assert default.parent.parent == REPO.parent and default.name == "corpus"
    assert f"`../{default.parent.name}/corpus`" in (REPO / "README.md").read_text()


def test_missing_captures_say_how_to_get_them(tmp_path: Path) -> None:
    data = bench_data()
    with pytest.raises(data.MissingData) as caught:
        data.madea_night(tmp_path)
    message = caught.value.message
    assert "missing" in message and str(tmp_path) in message
    assert "https://github.com/sprout-uci/madea" in message
    assert "6bd5e07471ce7bf55f08d9adb8e7503d96b5544e" in message
    assert "MUDGUARD_BIG_CORPUS" in message


def test_a_partial_or_altered_night_is_refused(tmp_path: Path) -> None:
    data = bench_data()
    folder = tmp_path / "pcap" / "madea-smarthome"
    folder.mkdir(parents=True)
    names = [name for name, _ in data.MADEA_NIGHT]
    for name in names[:-1]:
        (folder / name).write_bytes(b"not the capture")
    with pytest.raises(data.MissingData) as caught:
        data.madea_night(tmp_path)
    assert "1 of the 16" in caught.value.message and names[-1] in caught.value.message
    (folder / names[-1]).write_bytes(b"not the capture either")
    with pytest.raises(data.MissingData) as caught:
        data.madea_night(tmp_path)
    assert "differ" in caught.value.message and names[0] in caught.value.message


def test_the_benchmark_stops_before_any_work_with_status_1(tmp_path: Path) -> None:
    env = {"MUDGUARD_BIG_CORPUS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_profile.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "sprout-uci/madea" in done.stderr and done.stdout == ""
