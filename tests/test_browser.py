"""The HTML reports in a real browser: headless Chromium (Debian's ``chromium``, installed by .ci/run) renders them
with no console error, its DOM holds every record card, and it saves a screenshot."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from llm_attrib.apps.html_report import audit_html, trace_html
from test_html_report import synthetic_audit, synthetic_reports

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")


def chromium(page: Path, *flags: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``page`` with ``flags``, console messages logged to stderr (no network, fresh profile)."""
    with tempfile.TemporaryDirectory() as profile:
        root = ["--no-sandbox"] if os.geteuid() == 0 else []
        return subprocess.run(
            [CHROMIUM, "--headless", *root, "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *flags, page.as_uri()],
            capture_output=True, text=True, timeout=120, check=True)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def render(page: Path, screenshot: Path) -> str:
    """Render ``page`` to the PNG ``screenshot``; returns its DOM after rendering. Fails on any console message."""
    shot = chromium(page, f"--screenshot={screenshot}", "--window-size=1280,2000")
    dom = chromium(page, "--dump-dom")
    assert console_errors(shot.stderr + dom.stderr) == []
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return dom.stdout


def test_the_console_check_sees_a_script_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body>x<script>undefined_function()</script></body></html>")
    assert any("undefined_function" in line for line in console_errors(chromium(page, "--dump-dom").stderr))


def test_trace_and_audit_reports_render_without_console_errors(tmp_path):
    reports = synthetic_reports(3, 6)
    for name, text, n_cards in (("trace", trace_html(reports, {"kind": "trace"}), 3 * 6),
                                ("audit", audit_html(synthetic_audit()), 3)):  # 2 for the output, 1 in the evidence
        page = tmp_path / f"{name}.html"
        page.write_text(text)
        dom = render(page, tmp_path / f"{name}.png")
        assert dom.count('class="record ') == n_cards
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
