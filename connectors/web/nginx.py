"""The nginx backend of the web connector: ``return 302`` (or a 503 page) from an included snippet.

Hook line, once per site, first inside its ``server`` block: ``include <hook_dir>/<site>.con[f];`` (a glob
that matches nothing is no error, so the line is harmless while the site is not suspended).

Redirect mode writes ``return 302 <url>;``: a server-level ``return`` runs in the server rewrite phase,
before any location is chosen, so every path and every query string of the site is redirected (nginx
does not append the query string to a ``return`` URL). Page mode answers every URL with ``503`` and
``Retry-After``: ``return 503`` with an ``error_page`` to a named location that serves
``<page_root>/<page_file>``; a named location is entered past the server rewrite phase, so the page
itself is not caught by the ``return`` again.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.web.common import WebConnector, WebSettings, ere

__all__ = ["NginxConnector", "NginxSettings"]


class NginxSettings(WebSettings):
    """nginx defaults: Debian's layout, ``nginx -t`` and ``nginx -s reload``."""

    hook_dir: str = "/etc/nginx/arrears.d"
    vhost_dir: str = "/etc/nginx/sites-available"
    enabled_dir: str | None = "/etc/nginx/sites-enabled"
    vhost_name: str = "{site}"
    config_test: list[str] = Field(default_factory=lambda: ["nginx", "-t"])
    reload: list[str] = Field(default_factory=lambda: ["nginx", "-s", "reload"])


class NginxConnector(WebConnector):
    backend: ClassVar[str] = "nginx"
    Settings: ClassVar[type[WebSettings]] = NginxSettings

    def hook_line(self, site: str) -> str:
        return f"include {self.settings.hook_dir}/{site}.con[f];"

    def hook_regex(self, site: str) -> str:
        return (f"^[[:space:]]*include[[:space:]]+[\"']?{ere(self.settings.hook_dir)}/{site}"
                r"\.con(\[f\]|f)[\"']?[[:space:]]*;")

    def redirect_snippet(self, site: str, target: str) -> list[str]:
        return [f"return 302 {target};"]

    def version_script(self) -> str:
        return 'if command -v nginx >/dev/null; then fact version "$(nginx -v 2>&1)"; fi'

    def page_snippet(self, site: str, page: str) -> list[str]:
        s = self.settings
        return [
            f"error_page 503 @arrears_suspended_{site};",
            "return 503;",
            f"location @arrears_suspended_{site} {{",
            f"    root {s.page_root};",
            f"    rewrite ^ /{page} break;",
            "    default_type text/html;",
            f"    add_header Retry-After {s.retry_after} always;",
            '    add_header Cache-Control "no-store" always;',
            "}",
        ]
