"""Test the suite against the second supported Django line (6.x) on Python 3.12."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"


@nox.session(python="3.12")
def django6(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.install("Django==6.0.10")
    session.run("python", "-m", "pytest", "-m", "not browser", *session.posargs)
