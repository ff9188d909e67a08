"""Developer tools that need a package the README's install does not give say so in one
line naming the install command, never with a traceback."""

from __future__ import annotations

import sys

import pytest

from pvframe.tools import OPTIONAL, optional


@pytest.mark.parametrize("module", sorted(OPTIONAL))
def test_a_missing_optional_package_is_one_line_naming_its_install(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    with pytest.raises(SystemExit) as exc:
        optional(module, "the tool")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"the tool needs {module}" in err and "pip install" in err


def test_fuzz_without_atheris_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pvframe.tools import fuzz

    monkeypatch.setitem(sys.modules, "atheris", None)
    with pytest.raises(SystemExit):
        fuzz.main(["--atheris", "1"])
    assert "pip install atheris" in capsys.readouterr().err
