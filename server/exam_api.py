"""The exam HTTP API: create exam rooms, read results, logs and recordings.

Only admins, and teachers named as the exam's examiners, read results,
logs and the recordings of spoken answers; only admins and teachers create
exam rooms. Nothing here ever returns an item of a paper or its key: the
paper leaves the server only as each student's variant, over their own
connection, once the exam opens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rooms.errors import BackendError
from rooms.exam_results import results_csv

from . import auth, exams
from .api import _claims, _error, _json, create_from_body

logger = logging.getLogger(__name__)


async def create_exam(request: Request) -> Response:
    """``POST /api/exams``: an exam file (JSON or YAML) in the body."""
    node = request.app.state.node

    async def make(_: auth.Claims, body: bytes, filename: str) -> exams.CreatedExam:
        return await exams.create_exam(
            node.store, node.settings.secret, body, filename, int(time.time())
        )

    return await create_from_body(request, "exam", make)


def _readable(
    answer: Callable[[Request, str], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint of one exam that only its examiners and admins may read."""

    async def endpoint(request: Request) -> Response:
        claims = _claims(request)
        if isinstance(claims, JSONResponse):
            return claims
        exam_id = request.path_params["exam"]
        try:
            setup = await exams.load_setup(request.app.state.node.store, exam_id)
            if setup is None:
                return _error(404, "not_found", f"no exam {exam_id!r}")
            if not exams.may_read(claims, setup):
                return _error(
                    403, "forbidden", "only the exam's examiners and admins may"
                )
            return await answer(request, exam_id)
        except BackendError:
            return _error(503, "unavailable", "the store is unreachable; try again")

    endpoint.__doc__ = answer.__doc__
    return endpoint


def _attachment(body: bytes | str, media_type: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media_type,
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


@_readable
async def results(request: Request, exam_id: str) -> Response:
    """``GET /api/exams/{exam}/results``: JSON, or CSV with ``?format=csv``."""
    node = request.app.state.node
    found = await exams.exam_results(node.store, exam_id, node.hub.clock())
    if found is None:
        return _error(404, "not_found", f"no exam {exam_id!r}")
    if request.query_params.get("format") == "csv":
        return _attachment(
            results_csv(found), "text/csv; charset=utf-8", f"{exam_id}.csv"
        )
    return _json(found)


@_readable
async def log(request: Request, exam_id: str) -> Response:
    """``GET /api/exams/{exam}/log``: the log as ``lophoc verify-log`` reads it."""
    node = request.app.state.node
    key = node.hub.audit_key
    if key is None:
        return _error(503, "unavailable", "this node has no signing key")
    body = await exams.exam_log(node.store, exam_id, key)
    return _attachment(body, "application/x-ndjson", f"{exam_id}.log")


@_readable
async def recordings(request: Request, exam_id: str) -> Response:
    """``GET /api/exams/{exam}/recordings``: every stored spoken answer."""
    return _json(await exams.exam_recordings(request.app.state.node.store, exam_id))


@_readable
async def recording(request: Request, exam_id: str) -> Response:
    """``GET /api/exams/{exam}/recordings/{file}``: one spoken answer's Ogg Opus."""
    name = request.path_params["file"]
    audio = await exams.exam_recording(request.app.state.node.store, exam_id, name)
    if audio is None:
        return _error(404, "not_found", f"no recording {name!r}")
    return _attachment(audio, "audio/ogg", name)


routes = [
    Route("/api/exams", create_exam, methods=["POST"]),
    Route("/api/exams/{exam}/results", results, methods=["GET"]),
    Route("/api/exams/{exam}/log", log, methods=["GET"]),
    Route("/api/exams/{exam}/recordings", recordings, methods=["GET"]),
    Route("/api/exams/{exam}/recordings/{file}", recording, methods=["GET"]),
]
