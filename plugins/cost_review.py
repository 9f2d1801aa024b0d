"""The cost-review page inside the Airflow UI (an Airflow 3.3 plugin).

Served by the API server, under Airflow's own login:
    /cost-review/                    every workflow: verdict, reasons, ledger spend by category and month
    /cost-review/api/<workflow>      the same for one workflow, as JSON
    /cost-review/<workflow>/report   the full break-even report (breakeven.html) the cost_report DAG wrote
and "Cost review" in the UI's Browse menu, which shows the page inside the UI (/plugin/cost-review).
ml.costs.review_page reads the reports and the ledger and renders the page; this file only routes.

Who may see what: Airflow mounts a plugin's FastAPI app as it is, with no login check of its own
(only the root middlewares run, e.g. simple_auth_manager_all_admins' admin token), so every route
here depends on Airflow's `get_user`, as its /api/v2 routes do: the JWT from the Authorization
header or the UI's session cookie. Then the auth manager is asked whether that user may read
the workflow's `cost_report__<workflow>` Dag: whoever may see that Dag may see the report it
writes. A browser without a session is sent to the login page; an API client gets 401.
"""

import functools

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/cost-review"


class CostReviewPlugin(AirflowPlugin):
    name = "mlops_cost_review"
    external_views = [
        {
            "name": "Cost review",
            "href": "cost-review/",  # relative to the UI's base URL, so it works behind a proxy prefix
            "destination": "nav",
            "category": "browse",
            "url_route": "cost-review",  # shown in the UI (an iframe), not in a new tab
        }
    ]

    @property
    def fastapi_apps(self):
        # Built on first read, which only the API server does. Every Airflow process imports the
        # plugins folder (a worker, once per task try), and FastAPI with Airflow's API security
        # would add over a second to each of them.
        return [{"app": _app(), "url_prefix": URL_PREFIX, "name": "Cost review"}]


@functools.cache
def _app():
    # No `from __future__ import annotations` in this file: FastAPI reads the route signatures
    # below, and names imported here are only resolvable while they are real objects.
    from typing import Annotated

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from airflow.models.dag import DagModel
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from ml.config import SettingsError, load_settings
    from ml.costs import review_page
    from ml.costs.ledger import Ledger
    from ml.workflows import WorkflowError, load_workflows

    User = Annotated[BaseUser, Depends(get_user)]
    # The page is a plain server-rendered view: no OpenAPI docs, which would be served without login.
    app = FastAPI(title="Cost review", docs_url=None, redoc_url=None, openapi_url=None)

    def declared():
        """(settings, workflows by name); a broken setting or workflows file is the operator's to fix."""
        try:
            settings = load_settings()
            return settings, load_workflows(settings.workflows_file)
        except (SettingsError, WorkflowError) as exc:
            raise HTTPException(500, f"Cost review cannot start: {exc}") from None

    def readable(user, names) -> set[str]:
        dag_ids = {f"cost_report__{name}": name for name in names}
        teams = DagModel.get_dag_id_to_team_name_mapping(list(dag_ids))
        auth = get_auth_manager()
        return {
            name
            for dag_id, name in dag_ids.items()
            if auth.is_authorized_dag(
                method="GET", user=user, details=DagDetails(id=dag_id, team_name=teams.get(dag_id))
            )
        }

    def one_workflow(workflow: str, user):
        settings, workflows = declared()
        if workflow not in workflows:
            raise HTTPException(
                404,
                f"Unknown workflow {workflow!r}; {settings.workflows_file} declares: {', '.join(workflows)}.",
            )
        if workflow not in readable(user, [workflow]):
            raise HTTPException(
                403,
                f"You may not read cost_report__{workflow}, so not its cost review either; "
                "ask an admin for read access to that Dag.",
            )
        return settings, workflows[workflow]

    # Handlers are plain `def`: FastAPI runs them in its thread pool, where the ledger's and the
    # metadata database's blocking calls do not stall the server.
    @app.get("/", response_class=HTMLResponse)
    def page(user: User):
        try:
            settings, workflows = declared()
        except HTTPException as exc:
            return HTMLResponse(review_page.render_page([], problem=exc.detail), status_code=exc.status_code)
        allowed = readable(user, workflows)
        with Ledger(settings.ledger_url) as ledger:
            reviews = [
                review_page.review(name, wf.description, settings.reports_dir, ledger)
                for name, wf in workflows.items()
                if name in allowed
            ]
        return HTMLResponse(review_page.render_page(reviews))

    @app.get("/api/{workflow}")
    def workflow_json(workflow: str, request: Request, user: User) -> dict:
        settings, wf = one_workflow(workflow, user)
        with Ledger(settings.ledger_url) as ledger:
            review = review_page.review(workflow, wf.description, settings.reports_dir, ledger)
        return review.to_json() | {
            "report_url": str(request.url_for("report", workflow=workflow))
            if review.has_html_report
            else None
        }

    @app.get("/{workflow}/report", name="report")
    def report(workflow: str, user: User):
        settings, _ = one_workflow(workflow, user)
        path = settings.reports_dir / workflow / review_page.REPORT_HTML
        if not path.is_file():
            raise HTTPException(404, f"No report yet for {workflow}: run cost_report__{workflow}.")
        return FileResponse(path, media_type="text/html")

    @app.exception_handler(StarletteHTTPException)
    async def login_first(request: Request, exc: StarletteHTTPException):
        # A person opening the page without a session belongs on the login form, and back here after.
        path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
        if exc.status_code == 401 and not path.startswith("/api/"):
            return RedirectResponse(
                get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303
            )
        return await http_exception_handler(request, exc)

    return app
