"""The HTTP API against a real ``arrears serve`` (uvicorn on loopback) with httpx clients.

One server per module, its clock stood still at day 0 of the scenario timeline (``serve --at``); the CLI
(tests/scenarios/harness.py) reads the same database to hold both faces equal.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.api.server import ListenError, parse_listen
from tests.api.server import ApiServer, arrears_command, serve
from tests.scenarios.harness import POLICY, Arrears, day

# the seed's prepay example (CloudBlue): a financial blocking threshold of 200, paying with a negative balance
SEED_POLICY = POLICY.replace("{resume}", "[card]").replace(
    "  credit_limit: 0\n", "  credit_limit: 200\n  financial_threshold: 200\n").replace(
    "  pay_with_negative: false\n", "  pay_with_negative: true\n")
ACCOUNTS = [{"id": "acme-01", "username": "acme", "billing_email": "billing@acme.example"},
            {"id": "bravo-02", "username": "bravo", "billing_email": "ap@bravo.example"},
            {"id": "cash-03", "username": "cash", "billing_email": "office@cash.example"}]
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Arrears:
    arrears = Arrears.create(tmp_path_factory.mktemp("http") / "cfg", policy=SEED_POLICY, accounts=ACCOUNTS)
    arrears.charge("acme-01", 0, "10.00", "inv-1")  # balance -10 within the threshold of 200
    arrears.charge("cash-03", 0, "250.00", "inv-2")  # over it: a debtor
    return arrears


@pytest.fixture(scope="module")
def api(cli: Arrears) -> Iterator[ApiServer]:
    with serve(cli.folder, at=day(0)) as server:
        yield server


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


def test_without_a_token_401_with_the_wrong_scope_403(api: ApiServer) -> None:
    with api.client() as anonymous:
        r = anonymous.get("/v1/accounts/acme-01")
        assert problem(r, 401)["detail"].startswith("this endpoint needs a bearer token")
        assert r.headers["www-authenticate"].startswith("Bearer")
        forged = anonymous.get("/v1/accounts/acme-01", headers={"Authorization": "Bearer arr_forged"})
        assert problem(forged, 401)["detail"] == "the bearer token is unknown or revoked"
    with api.client("read") as reader:
        assert reader.get("/v1/accounts/acme-01/explain").status_code == 200
        body = problem(reader.post("/v1/payments", json={"account": "acme-01", "amount": "1"}), 403)
        assert "token 'read' has the scopes read" in body["detail"]
        problem(reader.post("/v1/accounts/acme-01/suspend", json={"reason": "x"}), 403)
    with api.client("billing") as billing:
        assert billing.get("/v1/accounts/acme-01/can-spend", params={"amount": "1"}).status_code == 200
        problem(billing.get("/v1/accounts/acme-01/explain"), 403)
        problem(billing.post("/v1/accounts/acme-01/resume", json={}), 403)


def test_a_revoked_token_is_refused_from_the_next_request_on(api: ApiServer, cli: Arrears) -> None:
    with api.client("read", name="short-lived") as client:
        assert client.get("/v1/debtors").status_code == 200
        cli.ok("tokens", "revoke", "short-lived")
        problem(client.get("/v1/debtors"), 401)
    # the purchase gate too, whose plain requests are answered ahead of the routing (agent.api.gate)
    with api.client("billing", name="storefront") as client:
        assert client.get("/v1/accounts/acme-01/can-spend", params={"amount": "1"}).status_code == 200
        cli.ok("tokens", "revoke", "storefront")
        problem(client.get("/v1/accounts/acme-01/can-spend", params={"amount": "1"}), 401)


def test_the_purchase_gate_answers_its_plain_requests_as_the_route_does(api: ApiServer) -> None:
    """A plain can-spend (one ``amount``) is answered ahead of the routing; with ``at`` (the server's own
    clock here) the route answers: the two agree byte for byte, refusals included."""
    def both(client: httpx.Client, account: str, amount: str) -> tuple[httpx.Response, httpx.Response]:
        path = f"/v1/accounts/{account}/can-spend"
        return client.get(path, params={"amount": amount}), client.get(path, params={"amount": amount, "at": day(0)})

    with api.client("billing") as billing:
        for account, amount, status in [("acme-01", "190.00", 200), ("acme-01", "190.01", 200), ("cash-03", "5", 200),
                                        ("acme-01", "-1", 422), ("acme-01", "ten", 422), ("acme-01", "1" * 41, 422),
                                        ("nobody", "1", 404), ("x" * 65, "1", 422)]:
            plain, routed = both(billing, account, amount)
            assert plain.status_code == routed.status_code == status, (account, amount, plain.text)
            assert plain.content == routed.content
            assert {k: v for k, v in plain.headers.items() if k != "date"} == {
                k: v for k, v in routed.headers.items() if k != "date"}
    with api.client("read") as reader, api.client("admin") as admin:  # the other scopes it takes
        assert reader.get("/v1/accounts/acme-01/can-spend", params={"amount": "1"}).json()["allowed"] is True
        assert admin.get("/v1/accounts/acme-01/can-spend", params={"amount": "1"}).json()["allowed"] is True


def test_the_purchase_gate_sees_a_payment_or_a_ledger_line_at_once(api: ApiServer, cli: Arrears) -> None:
    """The shortcut keeps its connection open between requests: what is committed before a request, through
    the API or by another process (the CLI), is in its answer."""
    def available(client: httpx.Client) -> str:
        r = client.get("/v1/accounts/gate-05/can-spend", params={"amount": "1"})
        assert r.status_code == 200, r.text
        value: str = r.json()["available"]
        return value

    with api.client("billing") as billing:
        made = billing.put("/v1/accounts/gate-05", json={"username": "gate", "billing_email": "gate@example.net"})
        assert made.status_code == 200, made.text
        assert available(billing) == "200"  # balance 0, threshold 200
        line = {"account": "gate-05", "at": day(0, 7), "amount": "-50.00", "kind": "charge", "ref": "inv-g1"}
        assert billing.post("/v1/ledger", json=line).status_code == 201
        assert available(billing) == "150.00"
        assert billing.post("/v1/payments", json={"account": "gate-05", "amount": "30.00", "ref": "pay-g1",
                                                  "at": day(0, 9)}).status_code == 201
        assert available(billing) == "180.00"
        cli.charge("gate-05", 0, "20.00", "inv-g2")  # another process, another connection
        assert available(billing) == "160.00"
        assert cli.json("can-spend", "gate-05", "1", "--at", day(0))["available"] == "160.00"


@pytest.mark.parametrize("amount", ["190", "190.00", "190.01", "0", "1000"])
def test_can_spend_agrees_with_the_command_line(api: ApiServer, cli: Arrears, amount: str) -> None:
    with api.client("billing") as billing:
        r = billing.get("/v1/accounts/acme-01/can-spend", params={"amount": amount, "at": day(0)})
    assert r.status_code == 200
    result = cli.invoke("can-spend", "acme-01", amount, "--at", day(0), "--json")
    import json

    assert r.json() == json.loads(result.stdout)
    assert r.json()["available"] == "190.00"  # threshold 200, balance -10
    assert r.json()["allowed"] is (amount in ("190", "190.00", "0")) is (result.exit_code == 0)


def test_the_same_payment_twice_credits_once_and_names_the_token(api: ApiServer, cli: Arrears) -> None:
    payment = {"account": "bravo-02", "amount": "25.00", "method": "card", "ref": "pay-77", "at": day(0, 9)}
    with api.client("billing", name="billing-system") as billing:
        first = billing.post("/v1/payments", json=payment)
        assert first.status_code == 201, first.text
        again = billing.post("/v1/payments", json=payment)
        assert again.status_code == 200 and again.json() == first.json()
        assert first.json() == {"account": "bravo-02", "amount": "25.00", "method": "card", "ref": "pay-77",
                                "at": "2026-03-02T09:00:00+00:00"}
        other = billing.post("/v1/payments", json={**payment, "amount": "30.00"})
        assert "pay-77" in problem(other, 409)["detail"]
        shown = billing.get("/v1/accounts/bravo-02", params={"at": day(0)}).json()
    assert shown["balance"] == "25.00"
    history = cli.json("history", "bravo-02")
    assert [(line["amount"], line["ref"]) for line in history["ledger"]] == [("25.00", "pay-77")]
    assert [(a["action"], a["actor"]) for a in history["audit"] if a["action"] == "payment"] == [
        ("payment", "billing-system")]


def test_a_ledger_line_posted_twice_is_recorded_once(api: ApiServer, cli: Arrears) -> None:
    line = {"account": "bravo-02", "at": day(0, 7), "amount": "-5.00", "kind": "charge", "ref": "inv-9"}
    with api.client("billing") as billing:
        first = billing.post("/v1/ledger", json=line)
        assert first.status_code == 201, first.text
        again = billing.post("/v1/ledger", json=line)
        assert again.status_code == 200 and again.json() == first.json()
    assert [x["ref"] for x in cli.json("history", "bravo-02")["ledger"]].count("inv-9") == 1


@pytest.mark.parametrize(("path", "body", "pointer"), [
    ("/v1/payments", {"account": "acme-01", "amount": "ten"}, "#/amount"),
    ("/v1/payments", {"account": "acme-01", "amount": "1.001"}, "#/amount"),
    ("/v1/payments", {"account": "acme-01", "amount": "-3"}, "#/amount"),
    ("/v1/payments", {"amount": "1"}, "#/account"),
    ("/v1/payments", {"account": "acme-01", "amount": "1", "at": "2026-03-02T09:00:00"}, "#/at"),
    ("/v1/payments", {"account": "acme-01", "amount": "1", "method": "Card!"}, "#/method"),
    ("/v1/payments", {"account": "acme-01", "amount": "1", "colour": "red"}, "#/colour"),
    ("/v1/ledger", {"account": "acme-01", "at": day(0), "amount": "5", "kind": "charge"}, "#/amount"),
])
def test_bad_input_is_a_422_problem_naming_the_field_and_writes_nothing(api: ApiServer, cli: Arrears, path: str,
                                                                         body: dict[str, Any], pointer: str) -> None:
    with api.client("billing") as billing:
        before = cli.dump()
        found = problem(billing.post(path, json=body), 422)
    assert pointer in [e["pointer"] for e in found["errors"]], found
    assert cli.dump() == before


def test_unknown_accounts_malformed_json_and_bad_queries_are_4xx(api: ApiServer) -> None:
    with api.client("admin") as admin:
        problem(admin.get("/v1/accounts/nobody"), 404)
        problem(admin.post("/v1/payments", json={"account": "nobody", "amount": "1"}), 404)
        problem(admin.post("/v1/payments", content=b"{not json", headers={"content-type": "application/json"}), 422)
        body = problem(admin.get("/v1/accounts/acme-01/can-spend", params={"amount": "-1"}), 422)
        assert [e["pointer"] for e in body["errors"]] == ["?amount"]
        body = problem(admin.get("/v1/accounts/acme-01", params={"at": "yesterday"}), 422)
        assert [e["pointer"] for e in body["errors"]] == ["?at"]
        problem(admin.get("/v1/debtors", params={"limit": 0}), 422)
        problem(admin.get("/v1/nothing-here"), 404)


def test_a_body_over_the_limit_is_refused_with_413(api: ApiServer, cli: Arrears) -> None:
    huge = b'{"account": "acme-01", "amount": "1", "ref": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    with api.client("billing") as billing:
        before = cli.dump()
        problem(billing.post("/v1/payments", content=huge, headers={"content-type": "application/json"}), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it comes
            yield huge[:1000]
            yield huge[1000:]

        problem(billing.post("/v1/payments", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert cli.dump() == before


def test_put_account_upserts_with_the_importers_validation(api: ApiServer, cli: Arrears) -> None:
    with api.client("billing") as billing:
        bad = problem(billing.put("/v1/accounts/new-04", json={"billing_email": "not-an-address"}), 422)
        assert [e["pointer"] for e in bad["errors"]] == ["#/billing_email"]
        problem(billing.put("/v1/accounts/bad%20id", json={}), 422)
        made = billing.put("/v1/accounts/new-04", json={"username": "new", "billing_email": "new@example.net"})
        assert made.status_code == 200, made.text
        assert made.json()["id"] == "new-04" and made.json()["billing_email"] == "new@example.net"
        changed = billing.put("/v1/accounts/new-04", json={"username": "renamed", "billing_email": "new@example.net"})
        assert changed.json()["username"] == "renamed"
    assert cli.json("show", "new-04", "--at", day(0))["username"] == "renamed"


def test_read_endpoints_answer_what_the_command_line_prints(api: ApiServer, cli: Arrears) -> None:
    with api.client("read") as reader:
        for account in ("acme-01", "cash-03"):
            assert reader.get(f"/v1/accounts/{account}", params={"at": day(1)}).json() == cli.json(
                "show", account, "--at", day(1))
            assert reader.get(f"/v1/accounts/{account}/explain", params={"at": day(1)}).json() == cli.json(
                "explain", account, "--at", day(1))
            assert reader.get(f"/v1/accounts/{account}/forecast", params={"at": day(1), "days": 40}).json() == \
                cli.json("forecast", account, "--days", "40", "--at", day(1))
            assert reader.get(f"/v1/accounts/{account}/history").json() == cli.json("history", account)


def _all_pages(client: httpx.Client, path: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        page = client.get(path, params={**params, "limit": 1, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def test_debtors_and_plan_come_in_pages_that_add_up_to_the_reports(api: ApiServer, cli: Arrears) -> None:
    with api.client("read") as reader:
        debtors = _all_pages(reader, "/v1/debtors", at=day(1))
        assert len(debtors) >= 2
        assert debtors == cli.json("debtors", "--at", day(1))
        planned = _all_pages(reader, "/v1/plan", at=day(1))
        assert planned and planned == cli.json("plan", "--at", day(1))
        assert reader.get("/v1/jobs", params={"status": "failed"}).json() == {"items": [], "next_cursor": None}


def test_an_admin_action_with_an_idempotency_key_is_done_once(api: ApiServer, cli: Arrears) -> None:
    with api.client("admin", name="panel-admin") as admin:
        first = admin.post("/v1/accounts/acme-01/suspend", json={"reason": "abuse report 12"},
                           headers={"Idempotency-Key": "ticket-12"})
        assert first.status_code == 200, first.text
        again = admin.post("/v1/accounts/acme-01/suspend", json={"reason": "abuse report 12"},
                           headers={"Idempotency-Key": "ticket-12"})
        assert again.status_code == 200 and again.json() == first.json()
        assert first.json()["actor"] == "panel-admin"
        # without the key the same request is a second suspension, which the rules refuse
        problem(admin.post("/v1/accounts/acme-01/suspend", json={"reason": "abuse report 12"}), 409)
    audit = cli.json("history", "acme-01")["audit"]
    assert [(a["action"], a["actor"]) for a in audit if a["action"] == "manual.suspend"] == [
        ("manual.suspend", "panel-admin")]


# --- where it may listen --------------------------------------------------------------------------

def test_it_listens_on_loopback_unless_tls_or_a_proxy_is_said(tmp_path: Path) -> None:
    assert parse_listen("127.0.0.1:8080").host == "127.0.0.1"
    assert parse_listen("[::1]:8080").host == "::1"
    assert parse_listen("localhost:9").port == 9
    with pytest.raises(ListenError, match="not a loopback address"):
        parse_listen("0.0.0.0:8080")
    with pytest.raises(ListenError, match="not a loopback address"):
        parse_listen("[::]:8080")
    assert parse_listen("0.0.0.0:8080", behind_proxy=True).behind_proxy
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    assert parse_listen("192.0.2.1:443", tls_cert=cert, tls_key=key).url == "https://192.0.2.1:443"
    with pytest.raises(ListenError, match="go together"):
        parse_listen("192.0.2.1:443", tls_cert=cert)
    with pytest.raises(ListenError, match="not HOST:PORT"):
        parse_listen("8080")
    with pytest.raises(ListenError, match="the port must be"):
        parse_listen("127.0.0.1:99999")


def test_serve_refuses_a_public_address_before_it_listens(cli: Arrears) -> None:
    result = subprocess.run([arrears_command(), "--config", str(cli.folder), "serve", "--listen", "0.0.0.0:8080"],
                            capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "is not a loopback address" in result.stderr and "Traceback" not in result.stderr


def test_the_served_openapi_document_is_the_committed_one(api: ApiServer) -> None:
    import json

    served = httpx.get(f"{api.url}/v1/openapi.json").json()
    assert served == json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())


def test_a_ledger_batch_is_written_whole_or_not_at_all(api: ApiServer, cli: Arrears) -> None:
    lines = [{"account": "bravo-02", "at": day(0, 6), "amount": "-1.00", "kind": "charge", "ref": f"b-{n}"}
             for n in range(3)]
    with api.client("billing") as billing:
        before = cli.dump()
        bad = billing.post("/v1/ledger/import", json={"records": [*lines, {**lines[0], "ref": "b-9",
                                                                              "amount": "1.001"}]})
        assert [e["pointer"] for e in problem(bad, 422)["errors"]] == ["#/records/3/amount"]
        assert cli.dump() == before
        ok = billing.post("/v1/ledger/import", json={"records": lines})
        assert ok.status_code == 200 and (ok.json()["created"], ok.json()["skipped"]) == (3, 0), ok.text
        again = billing.post("/v1/ledger/import", json={"records": lines})
        assert (again.json()["created"], again.json()["skipped"]) == (0, 3)


def test_show_explain_forecast_and_plan_are_the_same_data_from_the_cli_python_and_http(api: ApiServer,
                                                                                       cli: Arrears) -> None:
    import json

    from agent.service import Arrears as PythonApi
    from agent.service.results import jsonable

    at = day(1)
    moment = datetime.fromisoformat(at)

    def plain(value: Any) -> Any:
        return json.loads(json.dumps(jsonable(value)))

    with PythonApi.open(cli.folder) as python, api.client("read") as http:
        for account in ("acme-01", "cash-03"):
            faces = {
                "show": (cli.json("show", account, "--at", at), plain(python.show(account, now=moment)),
                         http.get(f"/v1/accounts/{account}", params={"at": at}).json()),
                "explain": (cli.json("explain", account, "--at", at), plain(python.explain(account, now=moment)),
                            http.get(f"/v1/accounts/{account}/explain", params={"at": at}).json()),
                "forecast": (cli.json("forecast", account, "--at", at),
                             plain(python.forecast(account, now=moment)),
                             http.get(f"/v1/accounts/{account}/forecast", params={"at": at}).json()),
            }
            for what, (by_cli, by_python, by_http) in faces.items():
                assert by_cli == by_python == by_http, (what, account)
        by_python = plain(python.plan(now=moment).items)
        assert cli.json("plan", "--at", at) == by_python == _all_pages(http, "/v1/plan", at=at)
        assert by_python, "the plan has measures to compare"
