"""The OpenAPI 3.1 document of the HTTP API (`GET /openapi.json`): made from the pydantic models the
handlers validate and answer with, and from what each route declares as it is added (`Doc`), so
it cannot drift from the routes. Made once, when the application is assembled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMAS = "#/components/schemas/{model}"


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str
    detail: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: RFC 9457 problem details (`connection.problem`)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["about:blank"] = Field(description="No problem types of our own.")
    title: str = Field(description="The status's phrase.")
    status: int = Field(ge=400, le=599, description="The HTTP status, repeated.")
    detail: str = Field(description="What is wrong, for a person to read.")
    instance: str | None = Field(
        default=None, description="The request id (`X-Request-ID`), when a request was read."
    )
    errors: list[FieldError] | None = Field(
        default=None, description="Each bad field and its problem (400 for bad values)."
    )
    error: str = Field(description="`detail` again: the first error format's member.")
    field: str | None = Field(
        default=None, description="What to fix: a field of the body, `body`, `Content-Type`..."
    )


Reply = tuple[str, type[BaseModel] | None]
"""A documented answer: its description and the model of its JSON body (None: an error, whose
body is the problem details every error has)."""

StreamReply = tuple[str, str | None]
"""A stream's answer: its description and media type (None: no body, a protocol switch)."""


@dataclass(frozen=True)
class Doc:
    """What a route tells the OpenAPI document about itself."""

    summary: str
    replies: Mapping[int, Reply]
    body: type[BaseModel] | None = None
    """The JSON request body's model (`application/json` in UTF-8, else 415)."""
    parameters: tuple[dict[str, Any], ...] = ()
    streams: Mapping[int, StreamReply] = field(default_factory=dict)
    """The answers of a stream (WebSocket: 101; SSE: 200 `text/event-stream`)."""


def parameter(
    name: str, where: Literal["query", "path", "header"], schema: dict[str, Any], description: str
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


def openapi_document(
    title: str, version: str, operations: Mapping[str, Mapping[str, tuple[Doc, bool]]]
) -> dict[str, Any]:
    """The document for `operations`: path template -> method -> (its Doc, whether it can be
    shed for overload)."""
    schemas: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=SCHEMAS)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        return {"$ref": SCHEMAS.format(model=model.__name__)}

    def json_reply(description: str, model: type[BaseModel] | None) -> dict[str, Any]:
        if model is None:
            model = ErrorBody  # answers without a model of their own are errors
        media = "application/problem+json" if model is ErrorBody else "application/json"
        return {"description": description, "content": {media: {"schema": ref(model)}}}

    paths: dict[str, Any] = {}
    for path, methods in operations.items():
        for method, (doc, shed) in methods.items():
            replies = {str(status): json_reply(*reply) for status, reply in doc.replies.items()}
            for status, (description, media) in doc.streams.items():
                replies[str(status)] = {"description": description}
                if media is not None:
                    replies[str(status)]["content"] = {media: {"schema": {"type": "string"}}}
            operation: dict[str, Any] = {"summary": doc.summary, "responses": replies}
            if doc.parameters:
                operation["parameters"] = list(doc.parameters)
            if doc.body is not None:
                schema = {"application/json": {"schema": ref(doc.body)}}
                operation["requestBody"] = {"required": True, "content": schema}
                replies["408"] = json_reply("The body did not arrive in time.", ErrorBody)
                replies["413"] = json_reply("The body is over MAX_REQUEST_BODY_BYTES.", ErrorBody)
                replies["415"] = json_reply("The body is not application/json in UTF-8.", ErrorBody)
            if shed:
                overloaded = json_reply("Too many requests in flight: retry later.", ErrorBody)
                overloaded["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
                replies["503"] = overloaded
            replies["4XX"] = json_reply("Refused; the body says why.", ErrorBody)
            replies["5XX"] = json_reply("Failed; the body says why.", ErrorBody)
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }
