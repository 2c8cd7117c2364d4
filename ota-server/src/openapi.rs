//! The OpenAPI 3.1 document served at `/v1/openapi.json`: every route, who may call it, and
//! what it takes. Built from one table ([`ROUTES`]) that a test checks against the router.

use serde_json::{json, Map, Value};

/// One route: method, path, summary, who may call it, request body media type.
pub struct Route {
    /// HTTP method, lower case.
    pub method: &'static str,
    /// Path template.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// `public`, `device`, `viewer`, `operator`, `admin` (or `viewer|device`).
    pub access: &'static str,
    /// Request body media type, if any.
    pub body: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: &'static str,
    body: Option<&'static str>,
) -> Route {
    Route {
        method,
        path,
        summary,
        access,
        body,
    }
}

const JSON: Option<&str> = Some("application/json");

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    r("post", "/v1/devices/enroll", "Enroll a device (enrollment token or pre-authorized key, with proof of key possession); returns its device token.", "public", JSON),
    r("get", "/v1/devices", "List devices: tags, online, last seen, reported state, uplink counters (messages, duplicates refused, predictions counted).", "viewer", None),
    r("get", "/v1/devices/{id}", "One device (as in the list) and its own telemetry per minute, the last 30 minutes it reported.", "viewer|device (itself)", None),
    r("get", "/v1/devices/{id}/events", "A device's reconcile event history, oldest first.", "viewer|device (itself)", None),
    r("post", "/v1/bundles", "Upload a bundle (.efb bytes); verified against the trust root.", "operator", Some("application/octet-stream")),
    r("get", "/v1/bundles", "List bundles.", "viewer", None),
    r("get", "/v1/bundles/{sha}", "A bundle: its record, the signed manifest (inputs, output, self-test, quantization, reference) and the rollouts that used it.", "viewer", None),
    r("delete", "/v1/bundles/{sha}", "Delete a bundle no live rollout uses.", "operator", None),
    r("get", "/v1/artifacts/{sha}", "Download a bundle (Range, ETag). Devices only get bundles in their desired state.", "viewer|device", None),
    r("post", "/v1/rollouts", "Create a rollout: bundle, selector, phases, gates, on_gate_failure.", "operator", JSON),
    r("get", "/v1/rollouts", "List rollouts.", "viewer", None),
    r("get", "/v1/rollouts/{id}", "A rollout with its transitions and the current phase's health.", "viewer", None),
    r("get", "/v1/rollouts/{id}/series", "Chart data: per phase and per version (new, previous) minute points of the gate metrics, the gates, the decision log.", "viewer", None),
    r("post", "/v1/rollouts/{id}/pause", "Pause a rollout.", "operator", None),
    r("post", "/v1/rollouts/{id}/resume", "Resume a paused rollout.", "operator", None),
    r("post", "/v1/rollouts/{id}/abort", "Abort: devices keep what they have.", "operator", None),
    r("post", "/v1/rollouts/{id}/rollback", "Roll back: devices of this rollout get their previous version.", "operator", None),
    r("get", "/v1/whoami", "The caller's token name, role and what it may do.", "viewer", None),
    r("post", "/v1/tokens", "Create an API token with a role.", "admin", JSON),
    r("post", "/v1/enrollment-tokens", "Create an enrollment token (uses, tags).", "admin", JSON),
    r("get", "/metrics", "Prometheus metrics.", "viewer", None),
    r("get", "/", "The fleet dashboard (HTML; sign in with an API token).", "public", None),
    r("get", "/healthz", "Liveness and broker connection.", "public", None),
    r("get", "/v1/openapi.json", "This document.", "public", None),
];

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        let mut op = json!({
            "summary": route.summary,
            "x-access": route.access,
            "responses": {
                "200": {"description": "OK"},
                "4XX": {"description": "Refused; the body is {\"error\": reason}",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if route.access != "public" {
            op["security"] = json!([{"bearer": []}]);
        }
        if let Some(media) = route.body {
            op["requestBody"] = json!({"required": true, "content": {media: {}}});
        }
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "edgefleet OTA server", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "An API token (eft_…, roles viewer < operator < admin) or a device token (efd_…)."}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}}}},
        },
    })
}
