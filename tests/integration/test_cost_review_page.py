"""The cost-review page (plugins/cost_review.py) in a real Airflow 3.3 API server, read by headless Chromium.

One `airflow db migrate`, then two `airflow api-server`s on free 127.0.0.1 ports, started together:
- "open" runs with simple_auth_manager_all_admins, so the browser needs no login form;
- "guarded" has one real user (reviewer, role viewer) and shows that the page sits behind
  Airflow's login: no session, no page; a token or the UI's session cookie, the page.
Both read a state folder this module fills: a small SQLite ledger and one cost_report output.

Needs Chromium; skipped, saying how to install it, when there is none:
    apt-get update && apt-get install -y --no-install-recommends chromium
Takes about 30 s, most of it the API servers starting.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from decimal import Decimal
from email.message import Message
from pathlib import Path

import pytest

from ml.costs import review_page
from ml.costs.ledger import Ledger, NewEntry

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).with_name("airflow")
START_TIMEOUT_S = 90
PASSWORD = "cost-review-test-password"
# Hostile text from a report file must come out as text, never as markup.
HOSTILE_REASON = "<script>document.title='pwned'</script> p99 latency 812 ms exceeds the 300 ms SLA"
VERDICT = "post-training pays from month 7"

LEDGER_ROWS = [  # workflow, category, occurred_at, quantity, unit, unit_price
    (
        "ticket_routing",
        "training_compute",
        datetime(2026, 8, 3, 9, tzinfo=timezone.utc),
        "12.5",
        "hour",
        "2.10",
    ),
    ("ticket_routing", "people", datetime(2026, 8, 20, 14, tzinfo=timezone.utc), "6", "hour", "95"),
    ("ticket_routing", "evaluation", datetime(2026, 9, 2, 8, tzinfo=timezone.utc), "0.5", "hour", "3.333"),
    ("clause_classification", "tooling", datetime(2026, 9, 1, tzinfo=timezone.utc), "1", "month", "49"),
]


# Pure parts (no server) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount, shown",
    [
        (Decimal("1.6665"), "$1.67"),
        (Decimal("1234.5"), "$1,234.50"),
        (Decimal("0"), "$0.00"),
        (Decimal("-5"), "-$5.00"),
        (Decimal("0.005"), "$0.00"),  # half-even, like the ledger
    ],
)
def test_usd_shows_two_decimals(amount, shown):
    assert review_page.usd(amount) == shown


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "no report yet — run cost_report__wf"),
        ("{not json", "cannot be read"),
        ("[1, 2]", "not a JSON object"),
        ('{"verdict": "x", "reasons": [], "naive": {}}', "'fully_loaded' is missing"),
        (
            '{"verdict": 3, "reasons": [], "naive": {}, "fully_loaded": {}}',
            "'verdict' is missing or not a str",
        ),
    ],
)
def test_unusable_report_says_what_to_run(tmp_path, content, problem):
    if content is not None:
        (tmp_path / "wf").mkdir()
        (tmp_path / "wf" / "breakeven.json").write_text(content)
    report, why = review_page.read_report(tmp_path, "wf")
    assert report is None and problem in why and "cost_report__wf" in why


# The real thing ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_state(state: Path) -> None:
    with Ledger(f"sqlite:///{state / 'ledger.db'}") as ledger:
        for i, (wf, category, at, quantity, unit, price) in enumerate(LEDGER_ROWS):
            ledger.append(
                NewEntry(
                    idempotency_key=f"review-test-{i}",
                    occurred_at=at,
                    category=category,
                    workflow=wf,
                    resource="cpu",
                    quantity=Decimal(quantity),
                    unit=unit,
                    unit_price=Decimal(price),
                    source_kind="person",
                    source="test",
                )
            )
    out = state / "reports" / "ticket_routing"
    out.mkdir(parents=True)
    summary = {
        "break_even_month": 7,
        "saving_at_horizon_usd": "48211.40",
        "break_even_calls_per_month": 41000,
        "horizon_months": 24,
    }
    (out / "breakeven.json").write_text(
        json.dumps(
            {
                "workflow": "ticket_routing",
                "generated_at": "2026-09-03T06:00:00+00:00",
                "verdict": VERDICT,
                "reasons": [HOSTILE_REASON, "fully loaded, post-training breaks even in month 7"],
                "ledger_totals_usd": {"people": "570.00000000", "training_compute": "26.25000000"},
                "naive": summary | {"break_even_month": 3},
                "fully_loaded": summary,
            }
        )
    )
    (out / "breakeven.html").write_text(
        "<!doctype html><title>Break-even: ticket_routing</title>"
        "<p id=verdict>post-training pays from month 7</p>"
    )


def _start(name: str, home: Path, env: dict, port: int, logs: Path) -> tuple[subprocess.Popen, Path]:
    log = logs / f"api-server-{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(AIRFLOW), "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env,
            cwd=home,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # its own process group: teardown ends all of it
    return proc, log


def _wait_healthy(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"airflow api-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"airflow api-server not healthy after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """{"open": base URL, "guarded": base URL}; both API servers stop at the end of the module."""
    root = tmp_path_factory.mktemp("cost_review")
    home, state = root / "airflow", root / "state"
    home.mkdir()
    state.mkdir()
    _write_state(state)
    (root / "passwords.json").write_text(json.dumps({"reviewer": PASSWORD}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))} | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "reviewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": "cost-review-test-secret-of-enough-length-0123456789",
        "MLOPS_STATE_DIR": str(state),
        "MLOPS_WORKFLOWS_FILE": str(REPO / "tests" / "fixtures" / "workflows_two.yaml"),
    }
    migrate = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, cwd=home, capture_output=True, text=True, timeout=180
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    started = {}
    try:
        for name, all_admins in (("open", "True"), ("guarded", "False")):
            port = _free_port()
            env_one = env | {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": all_admins}
            started[name] = (*_start(name, home, env_one, port, root), port)
        for proc, log, port in started.values():
            _wait_healthy(proc, port, log)
        yield {name: f"http://127.0.0.1:{port}" for name, (_, _, port) in started.items()}
    finally:
        for proc, _, _ in started.values():
            _stop(proc)


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "Chromium is not installed: apt-get update && apt-get install -y --no-install-recommends chromium"
        )
    return path


def _browse(chromium: str, url: str, profile: Path, *extra: str) -> str:
    """The DOM after Chromium loaded and ran the page (stderr is noise: no D-Bus in a container)."""
    run = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *extra,
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def _get(url: str, headers: dict | None = None) -> tuple[int, Message, str]:
    """(status, headers, body) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


@pytest.mark.integration
def test_airflow_lists_the_plugin_with_its_app_and_nav_entry(servers):
    status, _, body = _get(f"{servers['open']}/api/v2/plugins")
    assert status == 200, body
    plugin = {p["name"]: p for p in json.loads(body)["plugins"]}["mlops_cost_review"]
    assert plugin["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": "/cost-review", "name": "Cost review"}
    ]
    [view] = plugin["external_views"]
    assert (view["name"], view["href"], view["destination"], view["url_route"], view["category"]) == (
        "Cost review",
        "cost-review/",
        "nav",
        "cost-review",
        "browse",
    )
    _, _, errors = _get(f"{servers['open']}/api/v2/plugins/importErrors")
    assert json.loads(errors)["import_errors"] == []


@pytest.mark.integration
def test_chromium_renders_verdicts_spend_and_report_link(servers, chromium, tmp_path):
    url = f"{servers['open']}/cost-review/"
    dom = _browse(chromium, url, tmp_path / "profile")
    assert f'id="verdict-ticket_routing">{VERDICT}</p>' in dom
    # The hostile reason is text on the page, not a script that ran.
    assert html.escape(HOSTILE_REASON, quote=False) in dom
    assert "<script>" not in dom and "<title>Cost review</title>" in dom
    assert (
        'id="verdict-clause_classification">no report yet — run cost_report__clause_classification</p>' in dom
    )
    # August and September columns; 12.5 h x $2.10 and 0.5 h x $3.333 = $1.6665, shown to the cent.
    assert (
        '<tr data-category="training_compute"><td>training_compute</td><td class="num">$26.25</td>'
        '<td class="num">$0.00</td><td class="num">$26.25</td></tr>'
    ) in dom
    assert (
        '<tr data-category="evaluation"><td>evaluation</td><td class="num">$0.00</td><td class="num">$1.67</td>'
        in dom
    )
    assert (
        '<tr class="total"><td>total</td><td class="num">$596.25</td><td class="num">$1.67</td>'
        '<td class="num">$597.92</td></tr>' in dom
    )
    assert (
        '<tr data-category="tooling"><td>tooling</td><td class="num">$49.00</td><td class="num">$49.00</td></tr>'
        in dom
    )
    assert '<a id="report-ticket_routing" href="ticket_routing/report">' in dom
    assert 'id="report-clause_classification"' not in dom  # no report, no link

    # The link leads to the report the cost_report DAG wrote.
    report = _browse(chromium, url + "ticket_routing/report", tmp_path / "profile")
    assert "<title>Break-even: ticket_routing</title>" in report and VERDICT in report

    shot = tmp_path / "cost_review.png"
    _browse(chromium, url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


@pytest.mark.integration
def test_airflow_ui_shows_the_page_from_its_navigation(servers, chromium, tmp_path):
    # The React UI fetches the plugin list, then renders the nav entry's route as an iframe.
    dom = _browse(
        chromium, f"{servers['open']}/plugin/cost-review", tmp_path / "profile", "--virtual-time-budget=15000"
    )
    assert 'src="cost-review/" title="Cost review"' in dom


@pytest.mark.integration
def test_json_endpoint_gives_exact_amounts(servers):
    status, _, body = _get(f"{servers['open']}/cost-review/api/ticket_routing")
    assert status == 200, body
    data = json.loads(body)
    assert (data["verdict"], data["reasons"][0], data["problem"]) == (VERDICT, HOSTILE_REASON, None)
    assert data["ledger_usd"] == [
        {"month": "2026-08", "category": "people", "amount_usd": "570.00000000"},
        {"month": "2026-08", "category": "training_compute", "amount_usd": "26.25000000"},
        {"month": "2026-09", "category": "evaluation", "amount_usd": "1.66650000"},
    ]
    assert data["ledger_total_usd"] == "597.91650000"
    assert data["report_url"] == f"{servers['open']}/cost-review/ticket_routing/report"
    status, _, body = _get(f"{servers['open']}/cost-review/api/no_such_workflow")
    assert status == 404 and "ticket_routing, clause_classification" in json.loads(body)["detail"]
    status, _, body = _get(f"{servers['open']}/cost-review/clause_classification/report")
    assert status == 404 and "run cost_report__clause_classification" in json.loads(body)["detail"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "path, headers, status",
    [
        ("/cost-review/api/ticket_routing", {}, 401),  # an API client: told, not redirected
        ("/cost-review/", {}, 303),  # a browser: sent to the login form
        ("/cost-review/ticket_routing/report", {}, 303),
        ("/cost-review/api/ticket_routing", {"Authorization": "Bearer not-a-jwt"}, 403),
        ("/cost-review/", {"Cookie": "_token=not-a-jwt"}, 403),
    ],
)
def test_without_a_valid_session_nothing_is_shown(servers, path, headers, status):
    got, response_headers, body = _get(servers["guarded"] + path, headers)
    assert got == status, body
    assert VERDICT not in body and "26.25" not in body
    if status == 303:
        assert response_headers["Location"].startswith("/auth/login?next=")


@pytest.mark.integration
def test_a_signed_in_viewer_reads_it_by_token_or_session_cookie(servers):
    request = urllib.request.Request(
        f"{servers['guarded']}/auth/token",
        method="POST",
        data=json.dumps({"username": "reviewer", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        token = json.loads(r.read())["access_token"]
    status, _, body = _get(
        f"{servers['guarded']}/cost-review/api/ticket_routing", {"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and json.loads(body)["verdict"] == VERDICT
    # The UI keeps its session in the _token cookie; the page inside the UI's iframe sends it.
    status, _, body = _get(f"{servers['guarded']}/cost-review/", {"Cookie": f"_token={token}"})
    assert status == 200 and f'id="verdict-ticket_routing">{VERDICT}</p>' in body
