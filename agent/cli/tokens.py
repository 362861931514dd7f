"""``arrears tokens add NAME --scope S | list | revoke NAME``: the HTTP API's bearer tokens."""

from __future__ import annotations

import click

from agent.cli.app import CliError, api, echo, emit_json, iso, json_option, table

__all__ = ["tokens"]

_SCOPES = ("billing", "read", "admin")  # agent.api.tokens.SCOPES (tests/agent/test_api_tokens.py holds them equal)


@click.group()
def tokens() -> None:
    """Bearer tokens of the HTTP API (arrears serve): made, listed and revoked; stored hashed."""


@tokens.command("add")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(_SCOPES),
              help="billing (accounts, ledger, payments, can-spend), read, or admin; repeat for several")
@json_option
@click.pass_context
def add(ctx: click.Context, name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Make a token called NAME (the actor the audit log names); it is shown once, here."""
    from agent.api.tokens import TokenError, add_token

    svc, now = api(ctx)
    try:
        with svc.session() as s:
            token, info = add_token(s, name, scopes, actor=svc.actor_of(None), now=now)
    except TokenError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        emit_json({"name": info.name, "token": token, "scopes": list(info.scopes)})
        return
    echo(f"token {info.name} ({', '.join(info.scopes)}): {token}")
    echo("it is shown only now: keep it where the caller reads it (it is stored hashed)", err=True)


@tokens.command("list")
@click.option("--revoked", is_flag=True, help="list the revoked tokens too")
@json_option
@click.pass_context
def list_command(ctx: click.Context, revoked: bool, as_json: bool) -> None:
    """The tokens in force: name, scopes, when and by whom made (never the token)."""
    from agent.api.tokens import list_tokens

    svc, _ = api(ctx)
    with svc.session(write=False) as s:
        infos = list_tokens(s, revoked=revoked)
    if as_json:
        emit_json([i.as_dict() for i in infos])
        return
    if not infos:
        echo("no tokens (arrears tokens add NAME --scope S)")
        return
    table("tokens", ["name", "scopes", "created", "by", "revoked"],
          [[i.name, ", ".join(i.scopes), iso(i.created_at), i.created_by, iso(i.revoked_at)] for i in infos])


@tokens.command("revoke")
@click.argument("name")
@json_option
@click.pass_context
def revoke(ctx: click.Context, name: str, as_json: bool) -> None:
    """Revoke the token called NAME: the API refuses it from the next request on."""
    from agent.api.tokens import TokenError, revoke_token

    svc, now = api(ctx)
    try:
        with svc.session() as s:
            info = revoke_token(s, name, actor=svc.actor_of(None), now=now)
    except TokenError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        emit_json(info.as_dict())
    else:
        echo(f"token {info.name} revoked")
