"""The API's own description: OpenAPI 3.1 generated from the validating schemas, and a local docs page."""

from functools import cache
from typing import Any

from flask import Response, current_app, jsonify, render_template
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api.operations import OPERATIONS, bp
from incidents.schemas.reads import ProblemRead

_REF = "#/components/schemas/{model}"


@cache
def build_spec(version: str) -> dict[str, Any]:
    """OpenAPI 3.1 built from the registered operations and the pydantic schemas they validate with."""
    models: list[tuple[type[BaseModel], str]] = [(ProblemRead, "serialization")]
    for op in OPERATIONS:
        if op.body:
            models.append((op.body, "validation"))
        if op.response:
            models.append((op.response, "serialization"))
    keys, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    schemas = defs.get("$defs", {})
    ref = {model: keys[(model, mode)]["$ref"] for model, mode in keys}

    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        item: dict[str, Any] = {
            "summary": op.summary,
            "operationId": _operation_id(op.method, op.rule),
            "tags": [op.tag],
            "parameters": _path_params(op.path) + _query_params(op.query),
            "responses": {},
        }
        if op.body:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": ref[op.body]}}},
            }
        success: dict[str, Any] = {"description": "Success"}
        if op.response:
            success["content"] = {"application/json": {"schema": {"$ref": ref[op.response]}}}
        elif op.status != 204:
            success["content"] = {"application/json": {"schema": {"type": "object"}}}
        item["responses"][str(op.status)] = success
        if op.method == "post" and op.rule == "/incidents":
            item["responses"]["200"] = {
                "description": "A repeat of an open incident's dedup_key (an occurrence)",
                "content": {"application/json": {"schema": {"$ref": ref[op.response]}}},
            }
            item["parameters"].append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                }
            )
        for code in (*op.errors, 500, 503):
            item["responses"][str(code)] = {
                "description": "Problem",
                "content": {"application/problem+json": {"schema": {"$ref": ref[ProblemRead]}}},
            }
        item["security"] = [{"bearer": []}]
        paths.setdefault(op.path, {})[op.method] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "UCSC — ứng cứu sự cố ATTTM",
            "version": version,
            "description": "Incident intake and coordination API of the provincial steering board.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_params(path: str) -> list[dict[str, Any]]:
    import re

    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]


def _query_params(model: type[BaseModel] | None) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(mode="validation", ref_template=_REF)
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        prop.pop("title", None)
        if "$defs" in schema:
            prop = _inline(prop, schema["$defs"])
        params.append(
            {"name": name, "in": "query", "required": False, "schema": prop, "explode": True, "style": "form"}
        )
    return params


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Query parameters cannot point into components from a model's private $defs: inline them."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_spec(current_app.config["VERSION"]))


@bp.get("/docs")
def docs() -> str:
    spec = build_spec(current_app.config["VERSION"])
    return render_template("api_docs.html", spec=spec)


def _operation_id(method: str, rule: str) -> str:
    """`post_incidents_id_transitions` from POST /incidents/<int:id>/transitions."""
    name = rule.strip("/").replace("int:", "")
    for char, repl in (("/", "_"), ("<", ""), (">", "")):
        name = name.replace(char, repl)
    return f"{method}_{name}"
