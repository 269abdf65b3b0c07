"""digits.cli: options that cannot work are refused before any call is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from digits import cli


def test_the_cli_refuses_options_it_cannot_use_before_calling(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--tls-ca", str(tmp_path / "missing.pem"), "models"]) == 2
    assert "missing.pem" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # plaintext and TLS at once
        cli.main(["--insecure", "--tls-ca", str(tmp_path / "ca.pem"), "models"])
    with pytest.raises(SystemExit) as shown:
        cli.main(["--version"])
    assert shown.value.code == 0 and capsys.readouterr().out.startswith("digits ")
