"""``site.sandbox_layers``: the sandbox's OS layers, said once where it helps."""

from __future__ import annotations

import logging
import sys

from course_plugins.core.sandbox import executor
from course_plugins.site import sandbox_layers


def test_the_summary_names_active_layers_then_missing_ones_with_why():
    found = {
        "process": True, "rlimits": True, "no_new_privs": True, "language": True,
        "seccomp": False, "seccomp_reason": "pyseccomp is not installed",
        "netns": True, "setuid_nobody": False,
    }
    assert sandbox_layers.summary(found) == (
        "sandbox layers active: process, rlimits, no_new_privs, netns, language; not available: "
        "seccomp (pyseccomp is not installed), setuid_nobody (the host does not run as root)"
    )
    # Only seccomp and the network namespace weaken the kernel barrier.
    assert sandbox_layers.weakened(found) == {"seccomp": "pyseccomp is not installed"}
    whole = {**found, "seccomp": True, "setuid_nobody": True}
    assert sandbox_layers.summary(whole).endswith("netns, setuid_nobody, language")
    assert sandbox_layers.weakened(whole) == {}


def test_a_server_process_reports_the_layers_once(monkeypatch, caplog):
    monkeypatch.setattr(sandbox_layers, "_reported_pid", None)
    executor.layers()  # isolated plugins started the sandbox in this process
    with caplog.at_level(logging.INFO, logger="course_plugins.security"):
        sandbox_layers.report_once()
        sandbox_layers.report_once()
    lines = [r.getMessage() for r in caplog.records if "sandbox layers" in r.getMessage()]
    assert lines == [sandbox_layers.summary(executor.layers())]


def test_the_sandbox_starting_logs_its_layers_at_debug_only(caplog):
    # A one-off command (migrate, shell -c) that starts isolated plugins prints nothing about
    # the layers; the site says it where it helps.
    zygote = executor._Zygote(sys.executable)  # a first start, beside the process-wide one
    with caplog.at_level(logging.DEBUG, logger="course_plugins.security"):
        zygote._start()
        zygote._discard()
    said = [r for r in caplog.records if "sandbox layers" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.DEBUG]
    assert said[0].getMessage() == "sandbox layers active: " + executor.describe_layers(
        zygote.layers
    )
