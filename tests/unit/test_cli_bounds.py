"""Command-line bounds: a duration or an address the commands cannot honour is refused
up front with a usage error, never taken as "forever" or crashed on."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mudguard.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("duration", ["inf", "nan", "1e9", "-5", "0", "abc"])
def test_demo_duration_must_be_a_bounded_number_of_seconds(duration: str) -> None:
    result = runner.invoke(app, ["demo", "--headless", "--duration", duration])
    assert result.exit_code == 2 and "--duration" in result.output


@pytest.mark.parametrize("listen", ["abc", "127.0.0.1:99999", "[::1]:x", "0.0.0.0:-1",
                                    "host:80:90"])
def test_portal_listen_must_be_host_and_port(listen: str) -> None:
    result = runner.invoke(app, ["portal", "--listen", listen])
    assert result.exit_code == 2 and "--listen" in result.output
