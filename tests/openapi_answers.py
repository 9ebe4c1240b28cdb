"""The check both services' OpenAPI tests make: every route documents its 2xx answers."""

from __future__ import annotations

from typing import Any


def assert_every_answer_has_a_schema(document: dict[str, Any], *, json_required: bool) -> int:
    """Every 2xx answer of every route has content, each media type a schema, a JSON one a
    component with fields (and with `json_required`, every answer a JSON one). The number of
    routes."""
    components = document["components"]["schemas"]
    routes = 0
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            routes += 1
            answers = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
            assert answers, f"{method} {path} documents no 2xx answer"
            for code, answer in answers.items():
                content = answer.get("content")
                assert content, f"{method} {path} {code} has no content"
                if json_required:
                    assert "application/json" in content, f"{method} {path} {code}: no JSON"
                for media_type, body in content.items():
                    schema = body.get("schema")
                    assert schema, f"{method} {path} {code} {media_type}: empty schema"
                    if media_type == "application/json":
                        name = schema["$ref"].rsplit("/", 1)[-1]
                        assert components[name]["properties"], f"{name} has no fields"
    return routes
