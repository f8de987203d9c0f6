"""The generated OpenAPI document: complete, valid, and strict enough to catch drift."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
from _contract import Contract
from starlette.routing import Route

from web import models
from web.apidoc import build_document, openapi_document
from web.app import ROUTES, ApiRoute
from web.routes import OPERATIONS

API = "/api/v1/mcp"


def test_every_route_method_status_and_body_is_described() -> None:
    doc = openapi_document()
    for route in ROUTES:
        assert isinstance(route, ApiRoute)
        for method, endpoint in route.endpoints.items():
            op = OPERATIONS[endpoint]
            described = doc["paths"][route.path][method.lower()]
            statuses = set(described["responses"])
            assert str(op.status) in statuses
            assert {str(s) for s in op.errors} <= statuses
            if op.public:
                assert described["security"] == []
            else:
                assert {"401", "503"} <= statuses, route.path
            if op.body is not None:
                assert described["requestBody"]["required"] is True
                assert {"413", "422"} <= statuses
            else:
                assert "requestBody" not in described
            if "{name}" in route.path:
                assert "404" in statuses
                assert described["parameters"][0] == {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                }
            for status, response in described["responses"].items():
                if status == "204":
                    assert "content" not in response
                else:
                    assert (
                        "schema"
                        in response["content"][
                            op.media_type if status == str(op.status) else "application/json"
                        ]
                    )
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}


def test_the_document_is_valid_json_schema_throughout() -> None:
    doc = openapi_document()
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    server = doc["components"]["schemas"]["Server"]
    assert server["additionalProperties"] is False
    assert "Unix time in seconds" in server["properties"]["last_checked_at"]["anyOf"][0]["description"]


def test_query_parameters_come_from_the_query_models() -> None:
    params = openapi_document()["paths"][f"{API}/adapter-sessions"]["get"]["parameters"]
    by_name = {p["name"]: p for p in params}
    assert set(by_name) == set(models.SessionQuery.model_fields)
    assert by_name["limit"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}
    assert by_name["limit"]["description"] == "keep only the newest N"
    assert by_name["active_only"]["schema"]["type"] == "boolean"
    assert "null" not in str(by_name["server"]["schema"])


def test_registration_links_lead_to_the_registered_server() -> None:
    created = openapi_document()["paths"][f"{API}/servers"]["post"]["responses"]["201"]
    links = created["links"]
    assert links["get_server"] == {
        "operationId": "get_server",
        "parameters": {"name": "$response.body#/name"},
        "description": "the server just registered",
    }
    assert "delete_server" in links


def test_a_route_without_an_operation_is_refused() -> None:
    async def undocumented(request: Any) -> Any:
        raise AssertionError

    with pytest.raises(LookupError, match="/nowhere"):
        build_document([*ROUTES, Route("/nowhere", undocumented)])


def _server_answer() -> dict[str, Any]:
    return {
        "name": "a",
        "transport": {"kind": "memory"},
        "status": "healthy",
        "connection": "ready",
        "last_error": None,
        "last_error_category": None,
        "consecutive_failures": 0,
        "retry_count": 0,
        "last_checked_at": 1.0,
        "next_retry_at": None,
        "retry_window_open": True,
        "initialized": True,
        "initialized_at": 1.0,
        "initialization_expires_at": None,
        "capability_snapshot": None,
        "adapter_session": {
            "server": "a",
            "active": True,
            "initialized": True,
            "session_id": 1,
            "opened_at": 1.0,
            "last_activity_at": None,
            "freshness": "active_recent",
            "parked": False,
        },
        "adapter_controls_available": True,
        "in_flight": 0,
        "max_concurrency": 16,
    }


def test_the_checker_catches_drift() -> None:
    contract = Contract(openapi_document())
    good = _server_answer()
    contract.check("GET", f"{API}/servers/a", 200, json.dumps(good).encode(), "application/json")
    renamed = copy.deepcopy(good)
    renamed["last_checked"] = renamed.pop("last_checked_at")
    with pytest.raises(AssertionError, match="does not match"):
        contract.check("GET", f"{API}/servers/a", 200, json.dumps(renamed).encode(), "application/json")
    wrong_enum = copy.deepcopy(good)
    wrong_enum["status"] = "fine"
    with pytest.raises(AssertionError, match="/status"):
        contract.check("GET", f"{API}/servers/a", 200, json.dumps(wrong_enum).encode(), "application/json")
    with pytest.raises(AssertionError, match="status not in the document"):
        contract.check("GET", f"{API}/servers/a", 418, b"{}", "application/json")
    with pytest.raises(AssertionError, match="a body where the document says none"):
        contract.check("DELETE", f"{API}/servers/a", 204, b"{}", "application/json")
    error = {"detail": {"error": "unknown_server", "message": "no", "server": "a", "extra": 1}}
    with pytest.raises(AssertionError, match="does not match"):
        contract.check("GET", f"{API}/servers/a", 404, json.dumps(error).encode(), "application/json")
    # Fixed paths are not taken for a server name.
    assert contract.operation("POST", f"{API}/servers/health-check") == f"{API}/servers/health-check"
    assert contract.operation("GET", f"{API}/nowhere") is None
