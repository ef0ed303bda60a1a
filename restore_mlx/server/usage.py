"""``usage.restore`` in responses: the visual tokens before and after reduction.

An HTTP middleware gives each request a fresh report (a context variable, which
``asyncio.to_thread`` carries into mlx-vlm's generate call); the hooks fill it in
once the GPU thread has reduced the image. The report is added to the ``usage``
object of a JSON response, and to the usage chunk of a stream (``stream_options:
{"include_usage": true}``).
"""

import json

from starlette.responses import Response, StreamingResponse

from .hooks import REPORT


def add_usage_middleware(app) -> None:
    """Register the middleware on mlx-vlm's FastAPI ``app`` (before it starts)."""

    @app.middleware("http")
    async def restore_usage(request, call_next):
        report = {}
        token = REPORT.set(report)
        try:
            response = await call_next(request)
        finally:
            REPORT.reset(token)
        kind = response.headers.get("content-type", "")
        if kind.startswith("text/event-stream"):
            return _stream_with_report(response, report)
        if kind.startswith("application/json"):
            return await _json_with_report(response, report)
        return response


def _with_report(payload, report):
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if isinstance(usage, dict) and report:
        usage["restore"] = dict(report)
    return payload


async def _json_with_report(response, report):
    body = b"".join([chunk async for chunk in response.body_iterator])
    if report:
        try:
            body = json.dumps(_with_report(json.loads(body), report)).encode()
        except ValueError:
            pass
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return Response(body, response.status_code, headers, response.media_type)


def _stream_with_report(response, report):
    async def chunks():
        async for chunk in response.body_iterator:
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            if report and '"usage"' in text:
                text = "\n".join(
                    _line_with_report(line, report) for line in text.split("\n")
                )
            yield text

    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return StreamingResponse(chunks(), response.status_code, headers)


def _line_with_report(line, report):
    if not line.startswith("data: ") or '"usage"' not in line:
        return line
    try:
        payload = json.loads(line[len("data: ") :])
    except ValueError:
        return line
    return "data: " + json.dumps(_with_report(payload, report))
