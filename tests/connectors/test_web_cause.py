"""How the web handler words a failed config test or reload: by the lines that name the cause, taken
from the real output of nginx and apache2 (run here on broken configurations; no server is started)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from connectors.web.common import CAUSE_SH
from tests.servers.web import APACHE_MODULE_DIR, APACHE_MODULES


def cause(tmp_path: Path, output: str) -> str:
    """What the handler's shell function reports for ``output`` (as the host's sh and awk run it)."""
    (tmp_path / "web.out").write_text(output)
    result = subprocess.run(["sh", "-c", f". {CAUSE_SH}; _ar_tmp={tmp_path}; _w_first"], capture_output=True, text=True,
                            check=True)
    return result.stdout.rstrip("\n")


def _output(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode != 0, result
    return result.stdout + result.stderr


def _nginx_conf(tmp_path: Path, extra: str = "") -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {run}/nginx.pid;\n"
        f"error_log {tmp_path}/error.log notice;\n"
        "events { worker_connections 16; }\n"
        f"http {{ access_log off; client_body_temp_path {run}/b; proxy_temp_path {run}/p; "
        f"fastcgi_temp_path {run}/f; uwsgi_temp_path {run}/u; scgi_temp_path {run}/s; }}\n"
        f"{extra}")
    return conf


def test_a_failed_nginx_reload_is_reported_by_its_error_not_its_notice(tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (scripts/install-test-deps.sh installs it)")
    conf = _nginx_conf(tmp_path)  # no nginx runs with this pid file: the reload's signal has no target
    output = _output(["nginx", "-c", str(conf), "-s", "reload"])
    first = next(line for line in output.splitlines() if line.strip())
    assert "[notice]" in first and "signal process started" in first  # what used to be reported
    got = cause(tmp_path, output)
    assert "[error]" in got and f'open() "{tmp_path}/run/nginx.pid" failed' in got
    assert "signal process started" not in got


def test_a_failed_nginx_config_test_is_reported_by_its_emerg_line(tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (scripts/install-test-deps.sh installs it)")
    conf = _nginx_conf(tmp_path, "arrears_no_such_directive on;\n")
    output = _output(["nginx", "-c", str(conf), "-t"])
    got = cause(tmp_path, output)
    assert "[emerg]" in got and 'unknown directive "arrears_no_such_directive"' in got
    assert "test failed" not in got


def test_a_failed_apache_config_test_is_reported_by_its_syntax_error(tmp_path: Path) -> None:
    if shutil.which("apache2") is None:
        pytest.fail("apache2 is not installed (scripts/install-test-deps.sh installs it)")
    conf = tmp_path / "apache2.conf"
    modules = "".join(f"LoadModule {m}_module {APACHE_MODULE_DIR}/mod_{m}.so\n" for m in APACHE_MODULES)
    conf.write_text(f"ServerRoot {tmp_path}\n{modules}ServerName localhost\nArrearsNoSuchDirective on\n")
    output = _output(["apache2", "-d", str(tmp_path), "-f", str(conf), "-t"])
    got = cause(tmp_path, output)
    line = 3 + len(APACHE_MODULES)
    assert got.startswith(f"AH00526: Syntax error on line {line} of {conf}: Invalid command 'ArrearsNoSuchDirective'")


@pytest.mark.parametrize("output, expected", [
    # apache's harmless warning first, its boilerplate last: the syntax error, joined with its cause
    ("AH00558: apache2: Could not reliably determine the server's fully qualified domain name\n"
     "AH00526: Syntax error on line 2 of /etc/apache2/sites-enabled/a.conf:\n"
     "Invalid command 'Foo', perhaps misspelled\n"
     "Action 'graceful' failed.\nThe Apache error log may have more information.\n",
     "AH00526: Syntax error on line 2 of /etc/apache2/sites-enabled/a.conf: Invalid command 'Foo', perhaps misspelled"),
    # apache's error-log format
    ("[Tue Dec 01 09:00:00 2026] [core:error] [pid 1] AH00015: Unable to open logs\nAction 'start' failed.\n",
     "[Tue Dec 01 09:00:00 2026] [core:error] [pid 1] AH00015: Unable to open logs"),
    # several causes: up to three, in order
    ("nginx: [warn] a\nnginx: [emerg] one\nnginx: [alert] two\nnginx: [crit] three\nnginx: [error] four\n",
     "nginx: [emerg] one / nginx: [alert] two / nginx: [crit] three"),
    # nothing that names a level: the last line that is not boilerplate
    ("\nstarting\nsomething broke\r\nAction 'graceful' failed.\n", "something broke"),
    ("Action 'graceful' failed.\n", "Action 'graceful' failed."),
    ("", "no output"),
], ids=["apache-syntax", "apache-log-level", "several", "last-line", "only-boilerplate", "empty"])
def test_the_cause_among_other_lines(tmp_path: Path, output: str, expected: str) -> None:
    assert cause(tmp_path, output) == expected


def test_the_cause_is_cut_at_300_characters(tmp_path: Path) -> None:
    assert cause(tmp_path, "nginx: [emerg] " + "x" * 400 + "\n") == ("nginx: [emerg] " + "x" * 400)[:300]
