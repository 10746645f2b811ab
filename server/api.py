"""The HTTP API: create lessons, join with a code, read lesson reports.

Every request but ``POST /api/join`` carries a join token as
``Authorization: Bearer``. Errors are JSON ``{"error", "message"}``, with
``problems`` (path and message of each bad part) for a refused lesson file.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from client_sdk.protocol import Role
from media.recorder import RecordingInfo
from rooms.errors import BackendError
from rooms.plan import PlanError, parse_plan
from rooms.report import report_csv
from rooms.writer import load_room

from . import auth, exams, lessons

logger = logging.getLogger(__name__)

#: The largest lesson file accepted; a plan of 200 activities fits easily.
MAX_BODY = 1 << 20


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status)


def _json(data: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(data), status, media_type="application/json")


def _claims(request: Request) -> auth.Claims | JSONResponse:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return _error(401, "unauthorized", "send Authorization: Bearer <token>")
    try:
        return auth.verify(request.app.state.node.settings.secret, token.strip())
    except auth.TokenRefused as exc:
        return _error(401, "unauthorized", exc.reason)


async def _body(request: Request) -> bytes | JSONResponse:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return _error(413, "too_large", f"the body exceeds {MAX_BODY} bytes")
    return body


class Created(Protocol):
    """What creating a lesson or an exam room answers with."""

    @property
    def id(self) -> str: ...


#: Makes a lesson or an exam room from a posted file: the token's claims,
#: the body and its file name; a response when it refuses by itself.
Make = Callable[[auth.Claims, bytes, str], Awaitable[Created | Response]]


async def create_from_body(request: Request, kind: str, make: Make) -> Response:
    """``POST`` of a lesson or exam file (JSON or YAML): 201 with what it made.

    Only teachers and admins write one; the file name (``<kind>.json`` or
    ``<kind>.yaml``) follows the request's content type. A bad file gets 422
    with the path and message of every problem, a taken id 409.
    """
    claims = _claims(request)
    if isinstance(claims, JSONResponse):
        return claims
    if claims.role not in (Role.ADMIN, Role.TEACHER):
        return _error(403, "forbidden", f"only teachers and admins create {kind}s")
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    json = "json" in request.headers.get("content-type", "")
    try:
        made = await make(claims, body, f"{kind}.json" if json else f"{kind}.yaml")
    except PlanError as exc:
        problems = [{"path": p, "message": m} for p, m in exc.problems]
        return _error(422, f"invalid_{kind}", str(exc), problems=problems)
    except (lessons.LessonExists, exams.ExamExists) as exc:
        return _error(409, "exists", str(exc))
    except BackendError:
        return _error(503, "unavailable", "the store is unreachable; try again")
    if isinstance(made, Response):
        return made
    logger.info("%s %s created by %s", kind, made.id, claims.user)
    return _json(made, 201)


async def create_lesson(request: Request) -> Response:
    """``POST /api/lessons``: a lesson file (JSON or YAML) in the body."""
    node = request.app.state.node

    async def make(
        claims: auth.Claims, body: bytes, filename: str
    ) -> lessons.CreatedLesson | Response:
        plan = parse_plan(body, filename)
        if claims.role is Role.TEACHER and plan.host.user != claims.user:
            return _error(403, "forbidden", "a teacher creates only lessons they host")
        return await lessons.create_lesson(
            node.store, node.settings.secret, body, filename
        )

    return await create_from_body(request, "lesson", make)


async def join(request: Request) -> Response:
    """``POST /api/join``: ``{"code": ..., "name": ...}`` gives a student token."""
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        data = msgspec.json.decode(body, type=dict[str, str])
    except msgspec.MsgspecError as exc:
        return _error(400, "invalid", f"expected a JSON object of strings: {exc}")
    node = request.app.state.node
    try:
        lesson, access = await lessons.join_with_code(
            node.store, node.settings.secret, data.get("code", ""), data.get("name")
        )
    except lessons.UnknownCode as exc:
        return _error(404, "unknown_code", str(exc))
    except ValueError as exc:
        return _error(400, "invalid", str(exc))
    except BackendError:
        return _error(503, "unavailable", "the store is unreachable; try again")
    return _json(
        {
            "lesson": lesson,
            "user": access.user,
            "name": access.name,
            "token": access.token,
            "websocket": f"/ws?room={lesson}&token={access.token}",
        }
    )


async def _readable_plan(request: Request) -> tuple[str, Response | None]:
    claims = _claims(request)
    if isinstance(claims, JSONResponse):
        return "", claims
    lesson_id = request.path_params["lesson"]
    plan = await lessons.load_plan(request.app.state.node.store, lesson_id)
    if plan is None:
        return lesson_id, _error(404, "not_found", f"no lesson {lesson_id!r}")
    if not lessons.may_read(claims, plan):
        return lesson_id, _error(
            403, "forbidden", "only the lesson's teachers and admins may read this"
        )
    return lesson_id, None


async def report(request: Request) -> Response:
    """``GET /api/lessons/{lesson}/report``: JSON, or CSV with ``?format=csv``."""
    try:
        lesson_id, refused = await _readable_plan(request)
        if refused is not None:
            return refused
        found = await lessons.lesson_report(request.app.state.node.store, lesson_id)
    except BackendError:
        return _error(503, "unavailable", "the store is unreachable; try again")
    if found is None:
        return _error(404, "not_found", f"no lesson {lesson_id!r}")
    if request.query_params.get("format") == "csv":
        return Response(
            report_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{lesson_id}.csv"'},
        )
    return _json(found)


async def _recordings(request: Request) -> tuple[list[RecordingInfo], Response | None]:
    """The recordings of a lesson this request's token may hear.

    The host and admins hear every turn; a co-teacher only the turns of the
    students of their own school; anyone else none.
    """
    claims = _claims(request)
    if isinstance(claims, JSONResponse):
        return [], claims
    node = request.app.state.node
    lesson_id = request.path_params["lesson"]
    plan = await lessons.load_plan(node.store, lesson_id)
    if plan is None:
        return [], _error(404, "not_found", f"no lesson {lesson_id!r}")
    if not lessons.may_read(claims, plan):
        return [], _error(
            403, "forbidden", "only the lesson's teachers and admins hear recordings"
        )
    everyone = claims.role is Role.ADMIN or (
        claims.role is Role.TEACHER and claims.user == plan.host.user
    )
    room = await load_room(node.store, lesson_id)
    schools = {m.user: m.school for m in room.members.values()}
    schools.update({a.member.user: a.member.school for a in room.away.values()})
    stored = await asyncio.to_thread(_scan, node.media.folder(lesson_id))
    found = [
        info
        for info in stored
        if everyone or schools.get(info.participant) == claims.school
    ]
    return found, None


def _scan(folder: pathlib.Path) -> list[RecordingInfo]:
    """The finished recordings in a folder, from their JSON sidecars."""
    found = []
    for sidecar in sorted(folder.glob("*.json")):
        try:
            info = msgspec.json.decode(sidecar.read_bytes(), type=RecordingInfo)
        except (OSError, msgspec.MsgspecError):
            logger.warning("unreadable recording %s", sidecar)
            continue
        if pathlib.Path(info.path).is_file():
            found.append(info)
    return found


async def recordings(request: Request) -> Response:
    """``GET /api/lessons/{lesson}/recordings``: who, when, which prompt."""
    try:
        found, refused = await _recordings(request)
    except BackendError:
        return _error(503, "unavailable", "the store is unreachable; try again")
    if refused is not None:
        return refused
    return _json(
        [
            {
                "file": pathlib.Path(info.path).name,
                "participant": info.participant,
                "prompt": info.prompt,
                "started_at": info.started_at,
                "ended_at": info.ended_at,
                "seconds": info.seconds,
                "voiced_seconds": info.voiced_seconds,
            }
            for info in found
        ]
    )


async def recording(request: Request) -> Response:
    """``GET /api/lessons/{lesson}/recordings/{file}``: one turn's Ogg Opus."""
    try:
        found, refused = await _recordings(request)
    except BackendError:
        return _error(503, "unavailable", "the store is unreachable; try again")
    if refused is not None:
        return refused
    # Only a file listed for this token is served: the name is matched, never
    # joined to a path, so no request reaches outside the recordings.
    name = request.path_params["file"]
    for info in found:
        path = pathlib.Path(info.path)
        if path.name == name:
            return FileResponse(path, media_type="audio/ogg", filename=name)
    return _error(404, "not_found", f"no recording {name!r} you may hear")


routes = [
    Route("/api/lessons", create_lesson, methods=["POST"]),
    Route("/api/join", join, methods=["POST"]),
    Route("/api/lessons/{lesson}/report", report, methods=["GET"]),
    Route("/api/lessons/{lesson}/recordings", recordings, methods=["GET"]),
    Route("/api/lessons/{lesson}/recordings/{file}", recording, methods=["GET"]),
]
