"""The command line is presentation only: what arrears does is behind its Python API (agent.service), so the
modules of agent/cli/ import from arrears (and from SQLAlchemy) only ``agent.service``, ``agent.cli`` and
``agent.config`` (finding the configuration folder). The few other imports are listed here, each with why
it is not a rule of the debt lifecycle; a new one fails this test until it is moved behind the service or
listed with its reason.

It reads the imports (at the top and inside functions) of every module, so a rule that queries the store,
evaluates the policy or writes an action from agent/cli/ is found by the module it has to import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "agent" / "cli"
OURS = ("agent", "connectors", "policy", "sqlalchemy")  # arrears' packages, and the database's library
ALWAYS = ("agent.cli", "agent.service", "agent.config")

# (module of agent/cli, what it imports) -> why that is presentation, not a rule
ALLOWED = {
    # the errors the group words as one message (error classes only)
    ("app.py", "agent.notices.TemplateError"): "an error class, to print its message",
    ("app.py", "agent.store.db.StoreError"): "an error class, to print its message",
    ("app.py", "connectors.inventory.InventoryError"): "an error class, to print its message",
    ("app.py", "policy.PolicyError"): "an error class, to print its message",
    ("app.py", "agent.notices.NoticeSettings"): "a type name for `templates preview`'s context",
    ("app.py", "sqlalchemy.exc.SQLAlchemyError"): "an error class, to print its message",
    ("failures.py", "agent.store.db.StoreError"): "words a failure of the machine (locked, full disk)",
    ("failures.py", "sqlalchemy.engine.make_url"): "finds the database file a failure names",
    ("failures.py", "sqlalchemy.exc.ArgumentError"): "an error class, to print its message",
    ("failures.py", "sqlalchemy.exc.OperationalError"): "an error class, to print its message",
    ("failures.py", "agent.store.db.busy_timeout"): "names the wait in the 'database is locked' message",
    # `templates vars|preview` show what the notices module renders, exactly as it renders it
    ("templates.py", "agent.notices.VARIABLES"): "the variables' documentation, printed",
    ("templates.py", "agent.notices.TemplateError"): "an error class, to print its message",
    ("templates.py", "agent.notices.Templates"): "loads the templates to render a preview",
    ("templates.py", "agent.notices.preview_context"): "the preview's context, from the service's fields",
    ("templates.py", "agent.notices.render_page"): "renders a preview page",
    ("templates.py", "agent.notices.sample_context"): "the example values printed beside each variable",
    # `hosts check|prune|prepare` are the connectors' own tools on inventory.yaml; no account or debt is involved
    ("hosts.py", "connectors.hosts_check.check_hosts"): "the connectors' host check",
    ("hosts.py", "connectors.inventory.InventoryError"): "an error class, to print its message",
    ("hosts.py", "connectors.inventory.load_inventory_file"): "reads the inventory to check",
    ("hosts.py", "connectors.maintenance.prune_archives"): "the connectors' archive pruning",
    ("hosts.py", "connectors.prepare.prepare_hosts"): "the connectors' host preparation (hooks, config lines)",
    # the daemon command is the process around the ticks: signals, logging, metrics, its fleet
    ("daemon.py", "agent.daemon.JsonFormatter"): "the daemon's log format",
    ("daemon.py", "agent.daemon.run_daemon"): "the loop that calls the service's run every interval",
    ("daemon.py", "agent.lock.DAEMON"): "the role name the daemon holds the lock under",
    ("daemon.py", "agent.metrics.Metrics"): "the daemon's metrics",
    ("daemon.py", "agent.metrics.serve"): "serves the metrics",
    ("daemon.py", "connectors.runner.InventoryFleet"): "one fleet kept open across ticks",
    ("daemon.py", "connectors.maintenance.prune_archives"): "the daily archive pruning of hosts check/prune",
    # `demo` builds and replays the demo fleet (agent/demo.py)
    ("demo.py", "agent.demo.DEMO_START"): "the demo",
    ("demo.py", "agent.demo.DemoAccount"): "the demo",
    ("demo.py", "agent.demo.DemoError"): "the demo",
    ("demo.py", "agent.demo.build_demo"): "the demo",
    ("demo.py", "agent.demo.final_states"): "the demo",
    ("demo.py", "agent.demo.import_cast"): "the demo",
    ("demo.py", "agent.demo.replay_day"): "the demo",
    # `serve` and `daemon --api` run the HTTP API, the other face of the same Python API (agent/api/)
    ("serve.py", "agent.api.app.create_app"): "the HTTP application around the service",
    ("serve.py", "agent.api.server.ListenError"): "an error class, to print its message",
    ("serve.py", "agent.api.server.parse_listen"): "checks the address the API may listen on",
    ("serve.py", "agent.api.server.server"): "the uvicorn server",
    ("daemon.py", "agent.api.app.create_app"): "the HTTP application around the service",
    ("daemon.py", "agent.api.server.ListenError"): "an error class, to print its message",
    ("daemon.py", "agent.api.server.background"): "runs the uvicorn server beside the ticks",
    ("daemon.py", "agent.api.server.server"): "the uvicorn server",
    # `tokens` manages the HTTP API's bearer tokens (agent/api/tokens.py), not accounts or debt
    ("tokens.py", "agent.api.tokens.TokenError"): "an error class, to print its message",
    ("tokens.py", "agent.api.tokens.add_token"): "makes an API token",
    ("tokens.py", "agent.api.tokens.list_tokens"): "lists the API tokens",
    ("tokens.py", "agent.api.tokens.revoke_token"): "revokes an API token",
}


def imports_of(source: str) -> set[str]:
    """Every ``module.name`` an ``import`` or ``from ... import`` of :data:`OURS` names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in OURS}


def _allowed(module: str, name: str) -> bool:
    return name.startswith(tuple(f"{p}." for p in ALWAYS)) or name in ALWAYS or (module, name) in ALLOWED


def test_the_command_line_imports_only_the_service() -> None:
    modules = sorted(CLI.glob("*.py"))
    assert len(modules) > 10
    seen: set[tuple[str, str]] = set()
    unexpected = []
    for path in modules:
        for name in sorted(imports_of(path.read_text(encoding="utf-8"))):
            if (path.name, name) in ALLOWED:
                seen.add((path.name, name))
            elif not _allowed(path.name, name):
                unexpected.append(f"agent/cli/{path.name}: imports {name}: call agent.service instead")
    assert not unexpected, "\n".join(unexpected)
    assert seen == set(ALLOWED)  # an allowance nobody needs any more goes


def test_an_import_of_the_store_is_found() -> None:
    source = "def f():\n    from agent.store.repo import get_account\n    import policy.engine\n"
    assert imports_of(source) == {"agent.store.repo.get_account", "policy.engine"}
    assert not _allowed("money.py", "agent.store.repo.get_account")
