"""The apache backend of the web connector: a mod_rewrite rule (or a 503 page) from an included snippet.

Hook line, once per site, first inside its ``<VirtualHost>``: ``IncludeOptional <hook_dir>/<site>.conf``.
Needs mod_rewrite (``a2enmod rewrite``) and, for page mode, mod_headers (``a2enmod headers``); without
them the config test fails and the suspension is rolled back and reported.

Redirect mode: a vhost-level ``RewriteRule ^ <url> [R=302,L,QSD]``. Vhost-level rewrite rules run when
the URL is translated, before any directory is walked, so a ``.htaccess`` in the document root is never
read for a suspended site and cannot undo it (whatever its ``AllowOverride``); ``QSD`` drops the
request's query string, so every URL goes to exactly the suspended page. Page mode: the same rule
answers ``503`` (unless the request is already the internal redirect to the error page), ``ErrorDocument
503`` serves ``<page_root>/<page_file>`` through an ``Alias`` in a ``<Directory>`` with ``AllowOverride
None``, and mod_headers adds ``Retry-After``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from connectors.web.common import WebConnector, WebSettings, ere

__all__ = ["ApacheConnector", "ApacheSettings"]

PAGE_URI = "/.arrears-suspended.html"


class ApacheSettings(WebSettings):
    """apache defaults: Debian's layout, ``apachectl -t`` and ``apachectl -k graceful``."""

    hook_dir: str = "/etc/apache2/arrears.d"
    vhost_dir: str = "/etc/apache2/sites-available"
    enabled_dir: str | None = "/etc/apache2/sites-enabled"
    vhost_name: str = "{site}.conf"
    config_test: list[str] = Field(default_factory=lambda: ["apachectl", "-t"])
    reload: list[str] = Field(default_factory=lambda: ["apachectl", "-k", "graceful"])


class ApacheConnector(WebConnector):
    backend: ClassVar[str] = "apache"
    Settings: ClassVar[type[WebSettings]] = ApacheSettings

    def hook_line(self, site: str) -> str:
        return f"IncludeOptional {self.settings.hook_dir}/{site}.conf"

    def hook_regex(self, site: str) -> str:
        return (f"^[[:space:]]*IncludeOptional[[:space:]]+[\"']?{ere(self.settings.hook_dir)}/{site}"
                r"\.conf[\"']?[[:space:]]*$")

    def version_script(self) -> str:
        return ('if _c=$(command -v apache2ctl || command -v apachectl); then '
                'fact version "$("$_c" -v 2>&1 | head -n1)"; fi')

    def redirect_snippet(self, site: str, target: str) -> list[str]:
        # '%' would start a back-reference in a substitution; NE keeps the URL as written
        return ["RewriteEngine On", f"RewriteRule ^ {target.replace('%', chr(92) + '%')} [R=302,L,QSD,NE]"]

    def page_snippet(self, site: str, page: str) -> list[str]:
        s = self.settings
        return [
            f'Alias {PAGE_URI} "{s.page_root}/{page}"',
            f'<Directory "{s.page_root}">',
            "    AllowOverride None",
            "    Require all granted",
            "</Directory>",
            "RewriteEngine On",
            "RewriteCond %{ENV:REDIRECT_STATUS} ^$",
            "RewriteRule ^ - [R=503,L]",
            f"ErrorDocument 503 {PAGE_URI}",
            f'Header always set Retry-After "{s.retry_after}"',
            'Header always set Cache-Control "no-store"',
        ]
