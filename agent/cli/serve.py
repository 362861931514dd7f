"""``arrears serve``: the HTTP API on uvicorn (docs/http-api.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from agent.cli.app import CliError, at_option, echo, get_state

__all__ = ["api_options", "listen_from", "serve"]


def api_options(listen_flag: str, default: str | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options that say where the API listens (``serve --listen``, ``daemon --api``)."""
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed((
            click.option(listen_flag, "listen", default=default, metavar="HOST:PORT", show_default=default is not None,
                         help="address to serve the HTTP API on (loopback unless TLS or --behind-proxy)"),
            click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
                         help="TLS certificate (PEM) to serve HTTPS with"),
            click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                         help="the certificate's private key (PEM)"),
            click.option("--behind-proxy", is_flag=True,
                         help="a reverse proxy on this machine terminates TLS in front of the API (docs/http-api.md)"),
        )):
            f = option(f)
        return f
    return decorate


def listen_from(listen: str, tls_cert: Path | None, tls_key: Path | None, behind_proxy: bool) -> Any:
    from agent.api.server import ListenError, parse_listen

    try:
        return parse_listen(listen, tls_cert=tls_cert, tls_key=tls_key, behind_proxy=behind_proxy)
    except ListenError as exc:
        raise CliError(str(exc)) from None


@click.command("serve")
@api_options("--listen", "127.0.0.1:8080")
@at_option
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.pass_context
def serve(ctx: click.Context, listen: str, tls_cert: Path | None, tls_key: Path | None, behind_proxy: bool,
          at: datetime | None, log_level: str) -> None:
    """Serve the HTTP API (FastAPI on uvicorn) on loopback, or behind TLS or a proxy.

    Billing posts payments and ledger lines and asks can-spend; admin tools read accounts and suspend,
    resume, delete and restore them. Every request needs a bearer token (arrears tokens add). With --at
    the API's clock stands still at that moment (a simulation, like every command's --at).
    """
    from agent.api.app import create_app
    from agent.api.server import server
    from agent.service import Arrears

    state = get_state(ctx)
    where = listen_from(listen, tls_cert, tls_key, behind_proxy)
    with Arrears.open(state.config, clock=(lambda: at) if at is not None else None) as service:
        service.check()  # policy, templates and inventory: a mistake stops it before it listens
        srv = server(create_app(service), where, log_level=log_level)
        echo(f"arrears API on {where.url}/v1 (OpenAPI at {where.url}/v1/openapi.json)", err=True)
        srv.run()
    if not srv.started:
        raise CliError(f"the API could not listen on {where.host}:{where.port} (see the message above)")
