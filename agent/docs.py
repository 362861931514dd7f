"""docs/formats.md, written from the code: the import records, policy.yaml and inventory.yaml.

    python -m agent.docs            # rewrite docs/formats.md
    python -m agent.docs --check    # exit 1 when docs/formats.md differs from what the code says

The field lists, types and defaults come from the importer's field lists (:mod:`agent.imports`), the
policy loader's key lists and built-in values (:mod:`policy.loader`), and the pydantic models of the
inventory loader and of each connector's settings (:mod:`connectors.registry`), so a field added there
shows up here. What a field means is the model's own ``Field(description=...)`` when it has one, else
the prose below; the prose around the tables lives here too.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

__all__ = ["OUTPUT", "main", "render"]

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "formats.md"
COMMAND = "python -m agent.docs"

# --- what each field means, where its model does not say ----------------------------------------

ACCOUNT_FIELDS = {
    "id": "the account's id in billing: 1 to 64 characters, letters, digits and `._@-` (required; the key)",
    "username": "the customer's name as billing shows it (up to 200 characters)",
    "billing_email": "where notices go (one address)",
    "plan": "the billing plan: selects the `plans:` layer of policy.yaml",
    "reseller": "the reseller: selects the `resellers:` layer of policy.yaml",
    "currency": "ISO 4217 code (`USD`, `EUR`, `JPY`); default: the policy's. It cannot change once the account "
                "has ledger entries or invoices",
    "trial_ends_at": "end of a trial (a time with a zone); an ended unpaid trial starts an episode when "
                     "`triggers.trial` is true",
    "has_billing_profile": "`false` for an account without payment details (default `true`)",
    "policy": "the account's own policy layer: any key of a policy layer (see policy.yaml below), applied "
              "last",
    "resources": "what the account has on which host, per service: see *Resources*",
}
LEDGER_FIELDS = {
    "account": "the account's id (it must have been imported)",
    "at": "when the money moved: ISO 8601 with a zone (`2026-03-01T09:00:00Z`, `...+01:00`)",
    "amount": "a decimal number or text (`-19.90`, `\"25\"`); never a float's binary value; at most the "
              "currency's decimal places; not zero",
    "kind": "one of the kinds below; default: `payment` for a positive amount, `charge` for a negative one",
    "method": "how it was paid: lower-case letters, digits, `-` and `_` (`card`, `check`, `transfer`)",
    "ref": "billing's reference, unique per account; an entry whose (account, ref) is known is skipped. "
           "Without it, one is derived from the line's content (so the same line is never counted twice)",
}
LEDGER_KINDS = {
    "charge": "money owed: negative",
    "payment": "money received: positive",
    "credit": "a credit note: positive",
    "refund": "money given back: either sign, as billing books it",
    "adjustment": "a correction: either sign",
}
INVOICE_FIELDS = {
    "account": "the account's id (it must have been imported)",
    "id": "the invoice's number in billing, unique per account (the key with `account`)",
    "issued_at": "when it was issued (a time with a zone)",
    "due_at": "when it falls due (not before `issued_at`)",
    "amount": "the invoice's total: positive, at most the currency's decimal places",
    "paid_at": "when it was paid; absent while unpaid (a later file may add it)",
}
RESOURCES = {
    "web": ("`{\"host\": H, \"sites\": [\"example.com\", \"www.example.com\"], \"suspended_url\": URL}`",
            "each site, lower-cased, without a final dot",
            "`sites` is required (a non-empty list of domains, each once); `suspended_url` (optional) sends "
            "this account's visitors to another page than the host's"),
    "mail": ("`{\"host\": H, \"mailboxes\": [\"info@example.com\"], \"flags\": \"dpwibr\"}`",
             "each mailbox, lower-cased",
             "`mailboxes` is required; `flags` (optional, default all of `dpwibr`) says what a suspension "
             "takes away: d password change, p POP3, w webmail, i IMAP, b incoming mail (bounced), r external relay"),
    "login": ("`{\"host\": H, \"user\": \"alice\"}`", "the unix user",
              "`user` is required: a unix user name whose uid is at least the host's `min_uid`"),
    "home": ("`{\"host\": H, \"path\": \"/home/alice\"}`", "the home path (normalised)",
             "`path` is required and must lie strictly below one of the host's `roots`; no account's home "
             "may lie inside another's"),
}
POLICY_TOP = {
    "timezone": "IANA time zone the calendar days of `after:` are counted in (default `UTC`)",
    "defaults": "the first layer: applies to every account",
    "resellers": "layers by reseller name: `{NAME: {layer keys}}`, applied after `defaults`",
    "plans": "layers by plan name, applied after the reseller's",
    "notices": "how notices are written and sent (below)",
    "events": "where events are sent: a command or a webhook (below)",
    "agent": "the outbox's retry and chunk settings (below)",
    "web": "the suspended page's settings (see docs/web.md)",
}
POLICY_LAYER = {
    "currency": "the account's currency when billing names none",
    "credit_limit": "how far below zero the balance may go before the account is in debt (an amount >= 0)",
    "financial_threshold": "how far below zero `pay_with_negative` lets an order take the balance "
                           "(default: the credit limit)",
    "triggers": "what starts a debt episode (below)",
    "stages": "the measures, in order (below); a layer that sets `stages` replaces the whole list",
    "resume_on_payment": "whether a payment that clears the debt resumes the account: `true`, `false`, or a "
                         "list of the payment methods that do (e.g. `[card, transfer]`)",
    "pay_with_negative": "whether an order may be paid from a balance that goes negative",
    "guaranteed_payment": "`{limit: AMOUNT, days: N}`: an admin's promise of payment lifts a suspension for "
                          "N days up to `limit`",
}
POLICY_TRIGGERS = {
    "over_limit": "a balance below minus `credit_limit` starts an episode",
    "subzero_period": "days the balance may stay below zero before an episode starts (-1: never)",
    "max_delay": "longest time since the last payment while in debt (days or a duration)",
    "unpaid_total_over": "the unpaid invoices' total above which an episode starts",
    "invoice_expiration": "days after an invoice's due date when it starts an episode",
    "stop_grace": "further days of grace after `invoice_expiration`",
    "trial": "an ended unpaid trial starts an episode",
}
POLICY_STAGE = {
    "name": "the stage's name: letters, digits, `._-`, unique in the list",
    "action": "one of `notice`, `suspend`, `delete`, `hook`",
    "after": "when it falls due after the previous stage took effect: see *When a stage falls due*",
    "template": "the notice template (a `notice` stage, and the notice a `suspend`/`delete` stage sends)",
    "enabled": "`false` leaves the stage out (default `true`)",
    "hook": "the event a `hook` stage sends",
}
POLICY_GUARANTEE = {
    "limit": "the amount up to which a promise of payment lifts a suspension",
    "days": "how many days it lasts",
}
INVENTORY_TOP = {
    "defaults": "what every host has unless it says otherwise",
    "hosts": "the hosts by name (letters, digits, `._-`): how to reach each and the services it runs",
}
# keyed by the model's class name and field
FIELDS: dict[str, str] = {
    # defaults
    "Defaults.connect_timeout": "seconds to wait for a host's SSH handshake",
    "Defaults.state_dir": "the host's arrears state folder (saved originals, records of what was changed)",
    "Defaults.port": "SSH port",
    "Defaults.user": "SSH user (a non-root user needs `sudo: true`)",
    "Defaults.key": "private key file on the agent's machine (mode 600); relative to the inventory's folder",
    "Defaults.known_hosts": "known_hosts file with the hosts' keys; relative to the inventory's folder. "
                            "A host whose key is not there is refused, never added",
    "Defaults.sudo": "run the batch as `sudo -n /bin/sh -s` (the user needs NOPASSWD for /bin/sh)",
    # hosts
    "_RawHost.transport": "`ssh`, or `local` for this machine itself (tests, demo)",
    "_RawHost.address": "IP address or DNS name (required for ssh)",
    "_RawHost.port": "SSH port (default: `defaults.port`)",
    "_RawHost.user": "SSH user (default: `defaults.user`)",
    "_RawHost.key": "private key (default: `defaults.key`); relative to the inventory's folder",
    "_RawHost.known_hosts": "known_hosts file (default: `defaults.known_hosts`); relative to the inventory's "
                            "folder",
    "_RawHost.sudo": "default: `defaults.sudo`",
    "_RawHost.jump": "the inventory host this one is reached through (a bastion; its host key is verified too)",
    "_RawHost.ssh_config": "an OpenSSH ssh_config whose Host aliases `address` may name (default: "
                           "`defaults.ssh_config`); relative to the inventory's folder",
    "_RawHost.allow_agent": "also offer the keys of ssh-agent (default: `defaults.allow_agent`)",
    "_RawHost.key_passphrase_env": "environment variable holding the key's passphrase (default: "
                                   "`defaults.key_passphrase_env`)",
    "_RawHost.state_dir": "the host's arrears state folder (default: `defaults.state_dir`); hosts on one "
                          "machine (`transport: local`) each need their own, or their batches wait for one another",
    "_RawHost.services": "`{web|mail|login|home: {backend: NAME, settings...}}`: the backends' settings below",
    # web
    "WebSettings.hook_dir": "folder of the per-site include files (snippets) the vhosts include",
    "WebSettings.vhost_dir": "folder of the vhost files",
    "WebSettings.enabled_dir": "folder of the enabled vhosts (links), also searched for the include hook",
    "WebSettings.vhost_name": "a site's vhost file name in `vhost_dir`: must contain `{site}`, replaced by the "
                              "site",
    "WebSettings.state_dir": "where the snippets' previous versions are kept",
    "WebSettings.archive_dir": "where a deleted site's vhost and snippet are archived",
    "WebSettings.mode": "`redirect` to `suspended_url`, or serve the `page` from `page_root`",
    "WebSettings.suspended_url": "where every URL of a suspended site redirects (required in mode `redirect`)",
    "WebSettings.page_root": "folder holding the suspended page, served with 503 (required in mode `page`)",
    "WebSettings.page_file": "the suspended page's file in `page_root`",
    "WebSettings.retry_after": "seconds sent in `Retry-After` with the 503 of mode `page`",
    "WebSettings.config_test": "the command that checks the configuration; a failing test rolls the change back",
    "WebSettings.reload": "the command that reloads the server after a change",
    "WebSettings.extra_lines": "further configuration lines in every snippet (each checked as one safe line)",
    # mail
    "DovecotPostfixSettings.deny_dir": "dovecot's deny lists (one per protocol: imap, pop3, webmail)",
    "DovecotPostfixSettings.imap_ports": "ports whose connections count as IMAP",
    "DovecotPostfixSettings.pop3_ports": "ports whose connections count as POP3",
    "DovecotPostfixSettings.webmail_ports": "ports whose connections count as webmail",
    "DovecotPostfixSettings.password_lock_file": "the file dovecot's lock passdb reads",
    "DovecotPostfixSettings.bounce_map": "postfix map of mailboxes whose mail is refused",
    "DovecotPostfixSettings.norelay_map": "postfix map of senders that may not relay",
    "DovecotPostfixSettings.map_type": "postfix map type (`postmap TYPE:FILE`)",
    "DovecotPostfixSettings.norelay_class": "the postfix restriction class for `norelay_map`",
    "DovecotPostfixSettings.bounce_reply": "the reply postfix gives for a bounced mailbox",
    "DovecotPostfixSettings.postmap_command": "command to rebuild a map",
    "DovecotPostfixSettings.postfix_reload_command": "command to reload postfix",
    "DovecotPostfixSettings.dovecot_reload_command": "command to reload dovecot",
    "DovecotPostfixSettings.kick_command": "command to end a mailbox's open sessions",
    "DovecotPostfixSettings.state_dir": "where previous lists are kept",
    "DovecotPostfixSettings.maildir_template": "a mailbox's maildir: `{domain}` and `{local}` are replaced",
    "DovecotPostfixSettings.mail_roots": "maildirs must lie below one of these (a deletion never leaves them)",
    "DovecotPostfixSettings.archive_dir": "where a deleted mailbox's maildir is archived",
    "VpopmailSettings.vuserinfo_command": "vpopmail's `vuserinfo`",
    "VpopmailSettings.vmoduser_command": "vpopmail's `vmoduser` (sets and clears the flags)",
    "VpopmailSettings.kick_command": "command to end a mailbox's sessions (e.g. `doveadm kick`); none by default",
    "VpopmailSettings.state_dir": "where the previous flags are kept",
    "VpopmailSettings.domains_dir": "vpopmail's domains folder (deletions stay below it)",
    "VpopmailSettings.archive_dir": "where a deleted mailbox is archived",
    # login
    "LoginSettings.state_dir": "where a locked login's previous state is kept",
    "LoginSettings.crontab_dir": "the user crontabs; a locked user's crontab is moved aside and put back",
    "LoginSettings.min_uid": "a user whose uid is below this is refused (system accounts are never locked)",
    "LoginSettings.usermod_command": "command that expires and unexpires the user",
    "LoginSettings.kill_command": "command that ends the user's processes",
    "LoginSettings.loginctl_command": "command that ends the user's logind sessions; `null`: not used",
    # home
    "HomeSettings.roots": "a home must lie strictly below one of these",
    "HomeSettings.archive_dir": "where a home is archived (tar), verified, then the home removed",
    "HomeSettings.retention_days": "days an archive is kept before pruning removes it",
    "HomeSettings.state_dir": "where the archives' listings are kept",
    # notices:
    "NoticeSettings.from_addr": "the notices' From address (required)",
    "NoticeSettings.company": "your company's name, for the templates",
    "NoticeSettings.payment_url": "where to pay; `{account_id}` is replaced by the account's id (URL-quoted)",
    "NoticeSettings.support_email": "where customers write to",
    "NoticeSettings.domain": "right-hand side of Message-IDs (default: the domain of `from_addr`)",
    "NoticeSettings.locale": "how amounts and dates are written (`en`, `de`, `fr` ...)",
    "NoticeSettings.smtp": "send over SMTP (below); or",
    "NoticeSettings.spool_dir": "write each notice as an `.eml` file here for another system to send",
    "NoticeSettings.staff_email": "where notices about failed operations go",
    "NoticeSettings.proceed_after_failed_notice": "whether the stages after a notice that failed for good go "
                                                  "ahead",
    "SmtpSettings.host": "the SMTP server",
    "SmtpSettings.port": "default: 465 with `ssl`, 587 with `starttls`, else 25",
    "SmtpSettings.starttls": "upgrade the connection with STARTTLS",
    "SmtpSettings.ssl": "TLS from the start (SMTPS)",
    "SmtpSettings.username": "log in as this user",
    "SmtpSettings.password_env": "NAME of the environment variable holding the password",
    "SmtpSettings.timeout": "seconds per SMTP operation",
    "SmtpSettings.ca_file": "trust this CA bundle instead of the system's",
    "SmtpSettings.helo": "the name given in EHLO (default: this machine's name)",
    # events:
    "EventSettings.command": "run this command with each event as JSON on its standard input",
    "EventSettings.webhook": "POST each event as JSON to this URL",
    "EventSettings.timeout": "seconds per attempt",
    "EventSettings.retries": "further attempts after the first",
    "EventSettings.retry_wait": "first back-off in seconds, doubled per attempt",
    "EventSettings.retry_max_wait": "longest back-off",
    "EventSettings.secret_env": "NAME of the environment variable holding the HMAC secret of the webhook's "
                                "signature",
    "EventSettings.on": "the event types to send (default: all)",
    "EventSettings.env": "NAMES of further environment variables the command sees",
    # agent:
    "AgentSettings.lease_seconds": "a claimed job older than this is taken again (its worker died)",
    "AgentSettings.backoff_seconds": "first retry delay; doubles per attempt",
    "AgentSettings.backoff_max_seconds": "longest retry delay",
    "AgentSettings.max_attempts": "a job failing for other reasons than an unreachable host gives up after this",
    "AgentSettings.recheck_seconds": "how soon an account with work in flight is looked at again",
    "AgentSettings.tick_chunk": "due accounts a tick evaluates and records per transaction (at most 10,000)",
}


class DocsError(RuntimeError):
    """A field the code knows that this generator has no words for."""


# --- rendering -----------------------------------------------------------------------------------


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None)) + " or null"
    if origin in (list, tuple, Sequence):
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "mapping"
        return {"str": "text", "int": "whole number", "float": "number", "bool": "true/false",
                "PosixPath": "path", "Path": "path"}.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) if i else c for i, c in enumerate(row)) + " |" for row in rows]
    return "\n".join(lines)


def _words(where: str, name: str, table: dict[str, str]) -> str:
    try:
        return table[name]
    except KeyError:
        raise DocsError(f"{where}: no description of {name!r}; add one in agent/docs.py, then run {COMMAND}") \
            from None


def _model_rows(model: type[BaseModel]) -> list[list[str]]:
    rows = []
    for name, info in model.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = "required" if default is PydanticUndefined else f"`{_value(default)}`"
        words = info.description or FIELDS.get(f"{model.__name__}.{name}") or _inherited(model, name)
        rows.append([f"`{name}`", _type(info.annotation), shown, words])
    return rows


def _inherited(model: type[BaseModel], name: str) -> str:
    for base in model.__mro__[1:]:
        words = FIELDS.get(f"{base.__name__}.{name}")
        if words:
            return words
    return ""


def _model_table(model: type[BaseModel]) -> str:
    return _table(["key", "type", "default", "meaning"], _model_rows(model))


def _fields_table(where: str, names: Sequence[str], words: dict[str, str],
                  defaults: dict[str, object] | None = None) -> str:
    if defaults is None:
        return _table(["field", "meaning"], [[f"`{n}`", _words(where, n, words)] for n in names])
    return _table(["key", "default", "meaning"],
                  [[f"`{n}`", f"`{_value(defaults[n])}`" if n in defaults else "", _words(where, n, words)]
                   for n in names])


def _dataclass_table(cls: type[Any]) -> str:
    hints = typing.get_type_hints(cls)
    return _table(["key", "type", "default", "meaning"],
                  [[f"`{f.name}`", _type(hints[f.name]), f"`{_value(f.default)}`",
                    _words(cls.__name__, f"{cls.__name__}.{f.name}", FIELDS)] for f in dataclasses.fields(cls)])


def render() -> str:
    """The text of docs/formats.md."""
    from agent import imports
    from agent.config import AgentSettings
    from agent.events import EventSettings
    from agent.notices.settings import NoticeSettings, SmtpSettings
    from connectors import inventory, registry
    from policy import loader

    parts = [_INTRO]
    parts.append(_ACCOUNTS.format(
        table=_fields_table("accounts", imports._ACCOUNT_FIELDS, ACCOUNT_FIELDS),
        resources=_table(["service", "resource (besides `host`)", "keys: what the account owns on the host",
                          "rules"],
                         [[f"`{s}`", *RESOURCES[s]] for s in inventory.SERVICES]),
        csv=_CSV_EXAMPLE,
    ))
    parts.append(_LEDGER.format(
        table=_fields_table("ledger", imports._LEDGER_FIELDS, LEDGER_FIELDS),
        kinds=_fields_table("ledger kinds", imports.LEDGER_KINDS, LEDGER_KINDS),
        invoices=_fields_table("invoices", imports._INVOICE_FIELDS, INVOICE_FIELDS),
        example=_LEDGER_EXAMPLE, invoice_example=_INVOICE_EXAMPLE,
    ))
    builtin = dict(loader._BUILTIN)
    layer_defaults = {k: v for k, v in builtin.items() if "." not in k and k != "stages"}
    parts.append(_POLICY.format(
        top=_fields_table("policy.yaml", loader._TOP_KEYS, POLICY_TOP),
        layer=_fields_table("policy layer", loader._LAYER_KEYS, POLICY_LAYER, layer_defaults),
        triggers=_fields_table("triggers", loader._TRIGGER_KEYS, POLICY_TRIGGERS,
                               {k.removeprefix("triggers."): v for k, v in builtin.items()
                                if k.startswith("triggers.")}),
        stage=_fields_table("stages", loader._STAGE_KEYS, POLICY_STAGE, {"enabled": True, "after": None}),
        guarantee=_fields_table("guaranteed_payment", loader._GUARANTEE_KEYS, POLICY_GUARANTEE,
                                {k.removeprefix("guaranteed_payment."): v for k, v in builtin.items()
                                 if k.startswith("guaranteed_payment.")}),
        notices=_model_table(NoticeSettings),
        smtp=_model_table(SmtpSettings),
        events=_model_table(EventSettings),
        agent=_dataclass_table(AgentSettings),
    ))
    backends = []
    for service in inventory.SERVICES:
        for backend in registry.backends_for(service):
            model = registry.settings_model(service, backend)
            backends.append(f"### `{service}` with `backend: {backend}`\n\n{_BACKEND_NOTES.get(backend, '')}"
                            f"{_model_table(model)}\n")
    parts.append(_INVENTORY.format(
        top=_fields_table("inventory.yaml", list(inventory._RawInventory.model_fields), INVENTORY_TOP),
        defaults=_model_table(inventory.Defaults),
        host=_model_table(inventory._RawHost),
        backends="\n".join(backends),
    ))
    return "\n".join(p.strip("\n") + "\n" for p in parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Write docs/formats.md from the code.")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when it differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} differs from the code; run: {COMMAND}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


# --- the prose -----------------------------------------------------------------------------------

_INTRO = f"""\
# Formats

<!-- Written by `{COMMAND}` from the code (agent/docs.py holds the prose). Do not edit by hand:
     change the code or agent/docs.py, then run `{COMMAND}`; a test fails when this file is stale. -->

What arrears reads: the accounts, ledger and invoices that billing exports (`arrears accounts import`,
`arrears ledger import`, `arrears invoices import`), `policy.yaml` (what happens to a debtor, when) and
`inventory.yaml` (the hosts and how their services are set up). All three imports take JSON lines (one
object per line; empty lines and lines starting with `#` are skipped) or CSV (by the `.csv` suffix: a
header row, empty cells are absent, and the `resources` and `policy` cells hold JSON). Numbers in JSON are
read exactly (never as floats). A bad line refuses the whole file with `file:line: field: what is wrong`,
and nothing of the file is written; importing the same file again changes nothing.

Times are ISO 8601 with a zone (`2026-03-01T09:00:00Z`, `2026-03-01T10:00:00+01:00`), from 1970 to 2999.
"""

_ACCOUNTS = """\
## Accounts (`arrears accounts import FILE`)

One record per account; a record for a known `id` updates it: the record is the account as billing has
it now, so a field left out is cleared (except `currency`, which keeps the one first imported). Every
account imported or changed is looked at on the next run. Unknown fields are refused.

{table}

### Resources

`resources` maps each service to its placement on a host, or to a list of placements when the service is
on several hosts: `{{"web": {{"host": "web1", "sites": [...]}}}}` or `{{"web": [{{"host": "web1", ...}},
{{"host": "web2", ...}}]}}`. Each placement names a `host` of inventory.yaml that runs the service; a
service names a host at most once. The fields are checked by the connector's own validator before anything
is stored. What a placement names (its keys) belongs to exactly one account: a site, mailbox, user or home
that another account holds refuses the file (move it first with `arrears accounts move-resource`).

{resources}

One account on two web hosts, with mail and a login on a third:

```json
{{"id": "a1042", "username": "Alice Example", "billing_email": "alice@example.org", "plan": "basic",
 "currency": "EUR",
 "resources": {{"web": [{{"host": "web1", "sites": ["alice.example", "www.alice.example"]}},
                      {{"host": "web2", "sites": ["shop.alice.example"]}}],
               "mail": {{"host": "mx1", "mailboxes": ["alice@alice.example"], "flags": "dpwibr"}},
               "login": {{"host": "shell1", "user": "alice"}},
               "home": {{"host": "shell1", "path": "/home/alice"}}}}}}
```

(In a file, each record is on one line.) The same in CSV:

```
id,billing_email,plan,resources
{csv}
```
"""

_LEDGER = """\
## Ledger (`arrears ledger import FILE`)

Money that moved: one entry per line. **Sign convention: from the customer's side: a payment or credit is
positive, a charge is negative.** The balance is the sum of the entries. An entry whose `(account, ref)`
is known already (stored, or earlier in the file) is skipped.

{table}

Kinds:

{kinds}

```json
{example}
```

A payment recorded by hand: `arrears payment ACCOUNT AMOUNT --method check` (a cheque; the default method
is `card`; `transfer`, `cash` ... are as valid: any lower-case word), with `--ref` for billing's reference
and `--now` to apply it at once.

## Invoices (`arrears invoices import FILE`)

Invoices keyed by `(account, id)`; a later file may update one (typically to add `paid_at`). Amounts are
positive (what the customer owes); the payment itself is a ledger entry.

{invoices}

```json
{invoice_example}
```
"""

_POLICY = """\
## policy.yaml

Layers, applied in order: `defaults`, then the account's reseller (`resellers:`), then its plan
(`plans:`), then the account's own `policy` field from the import. Each layer may set any layer key;
a later layer replaces what an earlier one set (`stages` as a whole list). Unknown keys are refused with
the line and a suggestion.

{top}

A layer's keys (the default is the value before any layer sets it):

{layer}

`triggers:`

{triggers}

`guaranteed_payment:`

{guarantee}

Each entry of `stages:`:

{stage}

### When a stage falls due

`after` counts from when the previous stage **took effect** (its jobs done, recorded as the stage's time;
for the first stage: when the debt episode started). A stage whose previous one is still being applied
waits until that takes effect, then counts from then.

- `after: 5` (a whole number): **calendar days in the policy's `timezone`**. The stage falls due at local
  midnight (00:00 in that time zone) of the calendar date of the previous measure plus 5 days, so a
  suspension after `after: 3` from a notice sent on Monday at 15:00 falls due on Thursday at 00:00 local
  time (never before the previous measure itself). Daylight-saving changes move the UTC instant, not the
  local midnight.
- `after: 36h` (a duration: `w`, `d`, `h`, `m`, `s`, e.g. `2d12h`, `90m`, `2592000s`): exactly that long
  after the previous measure took effect (`5d` is 120 hours, not 5 calendar days).
- `after: null` or no `after`: at once.

Durations and day counts are at most 36,500 days. The same forms serve `triggers.max_delay`.

```yaml
timezone: Europe/Amsterdam
defaults:
  currency: EUR
  credit_limit: 0
  stages:
    - {{name: outstanding_notice, action: notice,  after: null, template: outstanding}}
    - {{name: pre_suspension,     action: notice,  after: 5,    template: pre_suspension}}
    - {{name: suspension,         action: suspend, after: 3,    template: suspended}}
    - {{name: deletion,           action: delete,  after: 30d,  template: deleted}}
plans:
  business: {{credit_limit: 50}}
notices:
  from_addr: billing@example.net
  smtp: {{host: smtp.example.net, port: 587, starttls: true, username: arrears, password_env: SMTP_PASSWORD}}
```

### `notices:`

{notices}

`notices.smtp:`

{smtp}

### `events:`

{events}

### `agent:`

{agent}
"""

_CSV_EXAMPLE = ('a1042,alice@example.org,basic,"{""web"": [{""host"": ""web1"", ""sites"": [""alice.example""]}, '
                '{""host"": ""web2"", ""sites"": [""shop.alice.example""]}]}"')
_LEDGER_EXAMPLE = ('{"account": "a1042", "at": "2026-03-01T00:00:00Z", "amount": "-19.90", "kind": "charge", '
                   '"ref": "inv-2026-03"}\n'
                   '{"account": "a1042", "at": "2026-03-04T12:30:00+01:00", "amount": "19.90", "kind": "payment", '
                   '"method": "check", "ref": "chq-88123"}')
_INVOICE_EXAMPLE = ('{"account": "a1042", "id": "2026-0301", "issued_at": "2026-03-01T00:00:00Z", '
                    '"due_at": "2026-03-15T00:00:00Z", "amount": "19.90"}')

_BACKEND_NOTES = {
    "nginx": "Each site's vhost (`vhost_dir`/`vhost_name`) must include its hook (see docs/web.md);\n"
             "the connector writes the hook's snippet, runs `config_test`, then `reload`.\n\n",
    "apache": "As nginx, with apache's folders and commands.\n\n",
    "unix": "A login lock expires the user (`usermod`), ends their sessions and processes, and moves their\n"
            "crontab aside; a uid below `min_uid` (1000 by default) is refused.\n\n",
}

_INVENTORY = """\
## inventory.yaml

The hosts arrears acts on. Unknown keys are refused with the line. Relative `key`, `known_hosts` and
`ssh_config` paths resolve against the folder of the inventory file (not the current folder); `~` is
expanded.

{top}

### `defaults:`

{defaults}

### `hosts.NAME:`

{host}

```yaml
defaults: {{user: root, key: keys/id_ed25519, known_hosts: keys/known_hosts}}
hosts:
  web1:
    address: 203.0.113.10
    services:
      web: {{backend: nginx, suspended_url: "https://billing.example.net/suspended"}}
  shell1:
    address: shell1.example.net
    user: arrears
    sudo: true
    services:
      login: {{backend: unix}}
      home:  {{backend: archive, roots: [/home], archive_dir: /var/backups/arrears, retention_days: 90}}
```

Each host's batch runs as one SSH command, `sh -s` (or `sudo -n /bin/sh -s`), with the script on its
standard input. **The remote user's shell start-up still runs for every batch**: sshd starts the command
through the user's login shell, and bash reads `~/.bashrc` for a command over SSH, even under a forced
`command="sh -s"` in authorized_keys. A `~/.bashrc` that runs `pyenv init` or prints text costs every
batch that much (a second each, for some) or breaks it; give the SSH user a plain shell start-up (return
early from `~/.bashrc` when `$-` has no `i`).

### Services

Each entry of a host's `services:` has `backend:` and that backend's settings:

{backends}
"""


if __name__ == "__main__":
    raise SystemExit(main())
