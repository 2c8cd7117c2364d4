//! The OpenAPI 3.1 document served at `/v1/openapi.json`, derived (utoipa) from each handler's
//! annotation and the `edge_protocol::rest` types its bodies are: every route with its request
//! and response schemas, who may call it (in its description), and the bearer scheme. A test
//! checks it against the router and that every operation has its schemas.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{artifacts, bundles, devices, ops, rollouts, tokens};

/// The document's derivation: the handlers, in the order the README lists them.
#[derive(OpenApi)]
#[openapi(
    info(title = "edgefleet OTA server",
         description = "Fleet registry, model registry, staged rollouts gated on model health, artifacts."),
    paths(
        devices::enroll, devices::list_devices, devices::show_device, devices::device_events,
        bundles::upload_bundle, bundles::list_bundles, bundles::show_bundle, bundles::delete_bundle,
        artifacts::artifact,
        rollouts::create_rollout, rollouts::list_rollouts, rollouts::show_rollout,
        rollouts::rollout_series, rollouts::pause_rollout, rollouts::resume_rollout,
        rollouts::abort_rollout, rollouts::rollback_rollout,
        tokens::whoami, tokens::create_token, tokens::create_enrollment_token,
        ops::metrics, ops::healthz, ops::openapi,
        crate::dashboard::index,
    ),
    modifiers(&Bearer),
)]
struct Api;

/// The bearer scheme every non-public route names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (eft_…, roles viewer < operator < admin) or a device token (efd_…).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    Api::openapi()
}

/// One documented route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// HTTP method, lower case.
    pub method: String,
    /// Path template.
    pub path: String,
}

/// Every documented route, as the document lists them.
pub fn routes() -> Vec<Route> {
    let doc = serde_json::to_value(document()).expect("an OpenAPI document serializes");
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for method in ops.as_object().into_iter().flatten().map(|(m, _)| m) {
            out.push(Route {
                method: method.clone(),
                path: path.clone(),
            });
        }
    }
    out
}
