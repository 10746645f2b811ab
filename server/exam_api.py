"""The exam HTTP API: create exam rooms, read results, export the log.

Only admins, and teachers named as the exam's examiners, read results and
logs; only admins and teachers create exam rooms. Nothing here ever
returns an item of a paper or its key: the paper leaves the server only as
each student's variant, over their own connection, once the exam opens.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from client_sdk.protocol import Role
from rooms.errors import BackendError
from rooms.exam_results import results_csv
from rooms.exam_setup import ExamSetup
from rooms.plan import PlanError

from . import exams
from .api import _body, _claims, _error, _json

logger = logging.getLogger(__name__)


async def create_exam(request: Request) -> Response:
    """``POST /api/exams``: an exam file (JSON or YAML) in the body."""
    claims = _claims(request)
    if isinstance(claims, JSONResponse):
        return claims
    if claims.role not in (Role.ADMIN, Role.TEACHER):
        return _error(403, "forbidden", "only examiners and admins create exams")
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    kind = request.headers.get("content-type", "")
    filename = "exam.json" if "json" in kind else "exam.yaml"
    node = request.app.state.node
    try:
        created = await exams.create_exam(
            node.store, node.settings.secret, body, filename, int(time.time())
        )
    except PlanError as exc:
        problems = [
            {"path": path, "message": message} for path, message in exc.problems
        ]
        return _error(422, "invalid_exam", str(exc), problems=problems)
    except exams.ExamExists as exc:
        return _error(409, "exists", str(exc))
    except BackendError:
        return _error(503, "unavailable", "the store is unreachable; try again")
    logger.info("exam %s created by %s", created.id, claims.user)
    return _json(created, 201)


async def _readable(request: Request) -> tuple[str, ExamSetup | None, Response | None]:
    claims = _claims(request)
    if isinstance(claims, JSONResponse):
        return "", None, claims
    exam_id = request.path_params["exam"]
    setup = await exams.load_setup(request.app.state.node.store, exam_id)
    if setup is None:
        return exam_id, None, _error(404, "not_found", f"no exam {exam_id!r}")
    if not exams.may_read(claims, setup):
        return (
            exam_id,
            None,
            _error(403, "forbidden", "only the exam's examiners and admins may"),
        )
    return exam_id, setup, None


async def results(request: Request) -> Response:
    """``GET /api/exams/{exam}/results``: JSON, or CSV with ``?format=csv``."""
    try:
        exam_id, _, refused = await _readable(request)
        if refused is not None:
            return refused
        node = request.app.state.node
        found = await exams.exam_results(node.store, exam_id, node.hub.clock())
    except BackendError:
        return _error(503, "unavailable", "the store is unreachable; try again")
    if found is None:
        return _error(404, "not_found", f"no exam {exam_id!r}")
    if request.query_params.get("format") == "csv":
        return Response(
            results_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{exam_id}.csv"'},
        )
    return _json(found)


async def log(request: Request) -> Response:
    """``GET /api/exams/{exam}/log``: the log as ``lophoc verify-log`` reads it."""
    try:
        exam_id, _, refused = await _readable(request)
        if refused is not None:
            return refused
        node = request.app.state.node
        key = node.hub.audit_key
        if key is None:
            return _error(503, "unavailable", "this node has no signing key")
        body = await exams.exam_log(node.store, exam_id, key)
    except BackendError:
        return _error(503, "unavailable", "the store is unreachable; try again")
    return Response(
        body,
        media_type="application/x-ndjson",
        headers={"content-disposition": f'attachment; filename="{exam_id}.log"'},
    )


routes = [
    Route("/api/exams", create_exam, methods=["POST"]),
    Route("/api/exams/{exam}/results", results, methods=["GET"]),
    Route("/api/exams/{exam}/log", log, methods=["GET"]),
]
