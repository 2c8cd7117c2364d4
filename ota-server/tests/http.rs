//! The HTTP API slice: the authorization matrix (every route × no token, viewer, operator,
//! admin, device, other device), bad input refused with a reason and nothing stored, artifacts
//! with Range and ETag, and everything still there after a restart.

mod common;

use common::digits;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::Signer;
use edge_bundle::trust::{self, RootAnchor, TrustRoot, TrustSpec};
use edge_bundle::SigningKey;
use edge_protocol::enroll::{proof_message, EnrollRequest};
use ota_server::auth::{create_token, Role};
use ota_server::bundles::Bundles;

use ota_server::desired::Target;
use ota_server::engine::DesiredRecord;
use ota_server::http::{router, AppState};
use ota_server::store::{Records, Store, Table};

struct Server {
    url: String,
    _rt: tokio::runtime::Runtime,
}

fn serve(dir: &Path, trust: TrustRoot) -> (Server, Records<dyn Store>) {
    let records = Records::new(common::open_store(&dir.join("server.redb")));
    let bundles = Bundles::new(records.clone(), &dir.join("artifacts"), 8 << 20).unwrap();
    let app = Arc::new(AppState::new(
        records.clone(),
        bundles,
        trust,
        Arc::new(|| 1_000),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let r = router(app, 8 << 20);
    rt.spawn(async move { axum::serve(listener, r).await });
    (Server { url, _rt: rt }, records)
}

/// A trust root with fresh root and signing keys.
fn ephemeral_trust() -> TrustRoot {
    signed_trust().1
}

/// A fresh model-signing key and the trust root (fresh root key) that lists it.
fn signed_trust() -> (SigningKey, TrustRoot) {
    let root = edge_bundle::keys::generate().unwrap();
    let signer = edge_bundle::keys::generate().unwrap();
    let doc = trust::create(&TrustSpec::ephemeral(&signer.verifying_key()), &root, None).unwrap();
    let trust = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())).unwrap();
    (signer, trust)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let a = agent();
    let mut resp = match (method, body) {
        ("GET" | "DELETE", _) => {
            let mut req = if method == "GET" {
                a.get(url)
            } else {
                a.delete(url)
            };
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call().unwrap()
        }
        (_, body) => {
            let (ct, bytes) = body.unwrap_or(("application/json", b"{}".to_vec()));
            let mut req = a.post(url).header("content-type", ct);
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            req.send(&bytes[..]).unwrap()
        }
    };
    let code = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    (code, String::from_utf8_lossy(&body).into_owned())
}

fn enroll_request(key: &SigningKey, id: &str, token: &str) -> EnrollRequest {
    let public = key.verifying_key().to_bytes();
    EnrollRequest {
        device_id: id.into(),
        public_key: hex::encode(public),
        token: token.into(),
        tags: Default::default(),
        agent_version: "t".into(),
        proof: hex::encode(key.sign(&proof_message(id, &public, token)).to_bytes()),
    }
}

#[test]
fn authorization_matrix_bad_input_artifacts_and_restart() {
    let root = edge_bundle::keys::generate().unwrap();
    let signer = edge_bundle::keys::generate().unwrap();
    let doc = trust::create(&TrustSpec::ephemeral(&signer.verifying_key()), &root, None).unwrap();
    let trust = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, records) = serve(dir.path(), trust.clone());
    let u = |p: &str| format!("{}{p}", server.url);

    let (viewer, _) = create_token(&records, "v", Role::Viewer, 0).unwrap();
    let (operator, _) = create_token(&records, "o", Role::Operator, 0).unwrap();
    let (admin, _) = create_token(&records, "a", Role::Admin, 0).unwrap();
    // two devices enroll over HTTP with an enrollment token made over HTTP
    let (code, body) = call(
        "POST",
        &u("/v1/enrollment-tokens"),
        Some(&admin),
        Some(("application/json", br#"{"name":"lab","uses":2}"#.to_vec())),
        &[],
    );
    assert_eq!(code, 201, "{body}");
    let etoken = serde_json::from_str::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut device_tokens = Vec::new();
    for id in ["dev-1", "dev-2"] {
        let key = edge_bundle::keys::generate().unwrap();
        let req = serde_json::to_vec(&enroll_request(&key, id, &etoken)).unwrap();
        let (code, body) = call(
            "POST",
            &u("/v1/devices/enroll"),
            None,
            Some(("application/json", req)),
            &[],
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        device_tokens.push(v["device_token"].as_str().unwrap().to_string());
    }
    let (dev1, dev2) = (device_tokens[0].clone(), device_tokens[1].clone());

    let bundle = digits(&signer, "1.0.0");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bundle));
    // the engine has told dev-1 (not dev-2) to run this bundle: only dev-1 may fetch it
    records
        .put(
            Table::Desired,
            "dev-1",
            &DesiredRecord {
                generation: 1,
                models: vec![Target {
                    name: "digits".into(),
                    version: "1.0.0".into(),
                    sha256: sha.clone(),
                    size: bundle.len() as u64,
                }],
                shadows: vec![],
            },
        )
        .unwrap();
    let callers: [(&str, Option<&str>); 6] = [
        ("none", None),
        ("viewer", Some(&viewer)),
        ("operator", Some(&operator)),
        ("admin", Some(&admin)),
        ("device", Some(&dev1)),
        ("other device", Some(&dev2)),
    ];
    let rollout_json = format!(
        r#"{{"bundle": "sha256:{sha}", "selector": "hw=x86", "phases": [{{"percent": 5, "soak_seconds": 600}}, {{"percent": 100}}],
            "gates": {{"max_error_rate": 0.01, "min_reporting_devices": 3}}, "on_gate_failure": "rollback"}}"#
    );
    let octet = |b: &[u8]| Some(("application/octet-stream", b.to_vec()));
    let json = |s: &str| Some(("application/json", s.as_bytes().to_vec()));
    type Row<'a> = (&'a str, String, Option<(&'a str, Vec<u8>)>, [u16; 6]);
    let rows: Vec<Row> = vec![
        (
            "POST",
            "/v1/bundles".into(),
            octet(&bundle),
            [401, 403, 201, 201, 403, 403],
        ),
        (
            "GET",
            "/v1/bundles".into(),
            None,
            [401, 200, 200, 200, 403, 403],
        ),
        (
            "GET",
            format!("/v1/bundles/sha256:{sha}"),
            None,
            [401, 200, 200, 200, 403, 403],
        ),
        (
            "GET",
            format!("/v1/artifacts/{sha}"),
            None,
            [401, 200, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/v1/devices/dev-1/events".into(),
            None,
            [401, 200, 200, 200, 200, 403],
        ),
        (
            "GET",
            "/metrics".into(),
            None,
            [401, 200, 200, 200, 403, 403],
        ),
        (
            "GET",
            "/v1/openapi.json".into(),
            None,
            [200, 200, 200, 200, 200, 200],
        ),
        (
            "GET",
            "/v1/devices".into(),
            None,
            [401, 200, 200, 200, 403, 403],
        ),
        (
            "GET",
            "/v1/devices/dev-1".into(),
            None,
            [401, 200, 200, 200, 200, 403],
        ),
        (
            "POST",
            "/v1/tokens".into(),
            json(r#"{"name":"x","role":"viewer"}"#),
            [401, 403, 403, 201, 403, 403],
        ),
        (
            "POST",
            "/v1/enrollment-tokens".into(),
            json(r#"{"name":"y"}"#),
            [401, 403, 403, 201, 403, 403],
        ),
        (
            "GET",
            "/healthz".into(),
            None,
            [200, 200, 200, 200, 200, 200],
        ),
        // the admin's rollout overlaps the operator's (same model, same cohort): 409
        (
            "POST",
            "/v1/rollouts".into(),
            json(&rollout_json),
            [401, 403, 201, 409, 403, 403],
        ),
        (
            "GET",
            "/v1/rollouts".into(),
            None,
            [401, 200, 200, 200, 403, 403],
        ),
        (
            "GET",
            "/v1/rollouts/r-1".into(),
            None,
            [401, 200, 200, 200, 403, 403],
        ),
        // the admin's pause finds it paused already: 409
        (
            "POST",
            "/v1/rollouts/r-1/pause".into(),
            None,
            [401, 403, 200, 409, 403, 403],
        ),
    ];
    for (method, path, body, want) in rows {
        for ((who, token), want) in callers.iter().zip(want) {
            let (code, text) = call(method, &u(&path), *token, body.clone(), &[]);
            assert_eq!(code, want, "{method} {path} as {who}: {text}");
            if code >= 400 {
                let v: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
                assert!(!v["error"].as_str().unwrap().is_empty());
            }
        }
    }
    // delete: refused for all but operators and admins; then it is gone
    for (who, token) in [callers[0], callers[1], callers[4], callers[5]] {
        let (code, _) = call(
            "DELETE",
            &u(&format!("/v1/bundles/{sha}")),
            token,
            None,
            &[],
        );
        assert!(code == 401 || code == 403, "DELETE as {who}: {code}");
    }

    // artifacts: Range, ETag
    let (code, part) = call(
        "GET",
        &u(&format!("/v1/artifacts/{sha}")),
        Some(&dev1),
        None,
        &[("range", "bytes=100-")],
    );
    assert_eq!(code, 206);
    assert_eq!(part.len(), String::from_utf8_lossy(&bundle[100..]).len());
    let (code, _) = call(
        "GET",
        &u(&format!("/v1/artifacts/{sha}")),
        Some(&dev1),
        None,
        &[("range", "bytes=999999999-")],
    );
    assert_eq!(code, 416);
    let (code, _) = call(
        "GET",
        &u(&format!("/v1/artifacts/{sha}")),
        Some(&dev1),
        None,
        &[("if-none-match", &format!("\"{sha}\""))],
    );
    assert_eq!(code, 304);

    // bad input: a reason, nothing stored
    let mut tampered = digits(&signer, "1.1.0");
    let n = tampered.len();
    tampered[n - 3] ^= 0xff;
    for (path, body, want, says) in [
        ("/v1/bundles", octet(&tampered), 422, "refused"),
        ("/v1/bundles", octet(b"not a bundle"), 422, "refused"),
        ("/v1/tokens", json("{\"name\": "), 400, "bad JSON"),
        (
            "/v1/tokens",
            json(r#"{"name":"x","role":"root"}"#),
            400,
            "unknown variant",
        ),
        (
            "/v1/tokens",
            json(r#"{"name":"x","role":"viewer","extra":1}"#),
            400,
            "unknown field",
        ),
        ("/v1/bundles", octet(&vec![0u8; 9 << 20]), 413, "limit"),
    ] {
        let (code, text) = call("POST", &u(path), Some(&admin), body, &[]);
        assert_eq!(code, want, "{path}: {text}");
        assert!(text.contains(says), "{path}: {text}");
    }
    for (body, says) in [
        (
            r#"{"bundle": "sha256:00", "phases": [{"percent": 5}]}"#.to_string(),
            "bundle id",
        ),
        (
            format!(r#"{{"bundle": "{sha}", "phases": []}}"#),
            "at least one phase",
        ),
        (
            format!(
                r#"{{"bundle": "{sha}", "selector": "hw in (a", "phases": [{{"percent": 5}}]}}"#
            ),
            "unbalanced",
        ),
        (
            format!(r#"{{"bundle": "{sha}", "phases": [{{"percent": 50}}, {{"percent": 5}}]}}"#),
            "below the previous",
        ),
        (
            format!(
                r#"{{"bundle": "{}", "phases": [{{"percent": 5}}]}}"#,
                "ab".repeat(32)
            ),
            "upload it first",
        ),
        (
            format!(
                r#"{{"bundle": "{sha}", "phases": [{{"percent": 5}}], "gates": {{"max_error_rate": 2}}}}"#
            ),
            "max_error_rate",
        ),
    ] {
        let (code, text) = call(
            "POST",
            &u("/v1/rollouts"),
            Some(&operator),
            json(&body),
            &[],
        );
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    let (code, text) = call(
        "POST",
        &u("/v1/devices/enroll"),
        None,
        json(r#"{"device_id":"x"}"#),
        &[],
    );
    assert_eq!(code, 400, "{text}");
    let (_, list) = call("GET", &u("/v1/bundles"), Some(&viewer), None, &[]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list).unwrap()["bundles"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // restart: devices, bundles and tokens are all still there
    drop(server);
    drop(records);
    let (server, _records) = serve(dir.path(), trust);
    let u = |p: &str| format!("{}{p}", server.url);
    let (code, devices) = call("GET", &u("/v1/devices"), Some(&viewer), None, &[]);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&devices).unwrap()["devices"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (code, _) = call(
        "GET",
        &u(&format!("/v1/artifacts/{sha}")),
        Some(&dev1),
        None,
        &[],
    );
    assert_eq!(
        code, 200,
        "device token and desired state survive the restart"
    );
    let (code, r1) = call("GET", &u("/v1/rollouts/r-1"), Some(&viewer), None, &[]);
    assert_eq!(code, 200);
    let r1: serde_json::Value = serde_json::from_str(&r1).unwrap();
    assert_eq!(r1["status"], "paused");
    assert_eq!(r1["transitions"][0]["reason"], "paused by o");
    let bundle_url = u(&format!("/v1/bundles/{sha}"));
    let (code, text) = call("DELETE", &bundle_url, Some(&operator), None, &[]);
    assert_eq!(code, 409, "in use by r-1: {text}");
    assert!(text.contains("r-1"));
    let (code, _) = call(
        "POST",
        &u("/v1/rollouts/r-1/abort"),
        Some(&operator),
        None,
        &[],
    );
    assert_eq!(code, 200);
    let (code, _) = call("DELETE", &bundle_url, Some(&operator), None, &[]);
    assert_eq!(code, 204);
    let (code, _) = call("DELETE", &bundle_url, Some(&admin), None, &[]);
    assert_eq!(code, 404);
}

/// The OpenAPI document's route table matches the router: every documented route answers
/// something other than "no such endpoint" / "method not allowed", and the document is served.
#[test]
fn openapi_lists_the_routes_the_router_serves() {
    let dir = tempfile::tempdir().unwrap();
    let trust = ephemeral_trust();
    let (server, _records) = serve(dir.path(), trust);
    for route in ota_server::openapi::routes() {
        let path = route
            .path
            .replace("{id}", "x")
            .replace("{sha}", &"0".repeat(64));
        let method = route.method.to_uppercase();
        let (code, text) = call(&method, &format!("{}{path}", server.url), None, None, &[]);
        assert!(code != 405, "{method} {path}: {code} {text}");
        assert!(
            code != 404 || !text.contains("no such endpoint"),
            "{method} {path}: {code} {text}"
        );
    }
    let (code, text) = call(
        "GET",
        &format!("{}/v1/openapi.json", server.url),
        None,
        None,
        &[],
    );
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    assert!(v["paths"]["/v1/rollouts/{id}/rollback"]["post"]["summary"].is_string());
}

#[test]
fn the_dashboard_is_self_contained_and_its_api_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let trust = ephemeral_trust();
    let (server, records) = serve(dir.path(), trust);
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let mut r = agent()
            .get(&format!("{}{path}", server.url))
            .call()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert_eq!(
            header("content-security-policy"),
            ota_server::dashboard::CSP
        );
        let body = r.body_mut().read_to_string().unwrap();
        // no absolute URL anywhere in the assets: nothing can be fetched from elsewhere
        for scheme in ["http://", "https://", "//cdn", "@import"] {
            assert!(!body.contains(scheme), "{path} mentions {scheme}");
        }
    }
    // the page's API calls: refused without a token, answered with one
    let (code, _) = call("GET", &format!("{}/v1/whoami", server.url), None, None, &[]);
    assert_eq!(code, 401);
    let (token, _) =
        ota_server::auth::create_token(&records, "wall", ota_server::auth::Role::Viewer, 1)
            .unwrap();
    let (code, text) = call(
        "GET",
        &format!("{}/v1/whoami", server.url),
        Some(&token),
        None,
        &[],
    );
    assert_eq!(code, 200, "{text}");
    let who: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&who["name"], &who["role"], &who["may"]["operate"]),
        (
            &serde_json::json!("wall"),
            &serde_json::json!("viewer"),
            &serde_json::json!(false)
        )
    );
    let (code, _) = call(
        "GET",
        &format!("{}/v1/rollouts/r-9/series", server.url),
        Some(&token),
        None,
        &[],
    );
    assert_eq!(code, 404);
}

/// The live view of a rollout shows the health the gate judged, PSI included (it was once
/// computed a second time without the bundle's reference statistics, so the view had no PSI
/// while the gate judged on it): the phase's predictions are all one digit, the gate fails on
/// PSI and pauses the rollout, and `GET /v1/rollouts/{id}` showed that PSI while the phase ran and
/// shows it after the decision.
#[test]
fn the_rollout_view_shows_the_psi_the_gate_judged() {
    use edge_protocol::{Histogram, TelemetryWindow};
    use ota_server::health::PhaseAggregate;
    use ota_server::telemetry_keys::phase_key;

    let dir = tempfile::tempdir().unwrap();
    let (signer, trust) = signed_trust();
    let (server, records) = serve(dir.path(), trust);
    let (operator, _) = create_token(&records, "ops", Role::Operator, 0).unwrap();
    let bytes = digits(&signer, "1.0.0");
    let reference = edge_bundle::inspect(&bytes, &Default::default())
        .unwrap()
        .manifest
        .reference;
    assert_eq!(
        reference.class_counts.len(),
        10,
        "digits has a class reference"
    );
    let (code, text) = call(
        "POST",
        &format!("{}/v1/bundles", server.url),
        Some(&operator),
        Some(("application/octet-stream", bytes)),
        &[],
    );
    assert_eq!(code, 201, "{text}");
    let sha = serde_json::from_str::<serde_json::Value>(&text).unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    records
        .put(
            Table::Devices,
            "dev-1",
            &common::device_record("dev-1", &[]),
        )
        .unwrap();
    let spec = serde_json::json!({
        "bundle": format!("sha256:{sha}"),
        "phases": [{"percent": 100.0, "soak_seconds": 0}],
        "gates": {"max_psi": 0.05},
    });
    let (code, text) = call(
        "POST",
        &format!("{}/v1/rollouts", server.url),
        Some(&operator),
        Some(("application/json", spec.to_string().into_bytes())),
        &[],
    );
    assert_eq!(code, 201, "{text}");
    // every prediction of the phase is a 3: far from the calibration's class mix
    let mut classes = vec![0; 10];
    classes[3] = 500;
    let mut aggregate = PhaseAggregate::default();
    aggregate
        .observe(
            "dev-1",
            &TelemetryWindow {
                model: "digits".into(),
                version: "1.0.0".into(),
                window_start: 0,
                window_secs: 60,
                requests: 500,
                errors: 0,
                latency_ms: Histogram::with_edges(vec![1.0, 10.0]),
                confidence: None,
                class_counts: classes,
                prediction: None,
                features: vec![],
                shadow: None,
                feedback: None,
            },
        )
        .unwrap();
    records
        .put(Table::Telemetry, &phase_key("r-1", 0), &aggregate)
        .unwrap();

    let view = || -> edge_protocol::rest::RolloutView {
        let (code, text) = call(
            "GET",
            &format!("{}/v1/rollouts/r-1", server.url),
            Some(&operator),
            None,
            &[],
        );
        assert_eq!(code, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    // the live view while the phase is running, before the engine judges it
    let running = view();
    assert_eq!(
        running.rollout.status,
        edge_protocol::rest::RolloutStatus::Running
    );
    assert!(
        running.health.psi.is_some(),
        "the running phase's view has a PSI"
    );

    let step = ota_server::engine::step(&records, 1_000, |_| reference.clone()).unwrap();
    let (_, transition) = &step.transitions[0];
    assert!(transition.reason.contains("PSI"), "{}", transition.reason);
    let gate_psi = transition.health.as_ref().unwrap().psi.unwrap();
    assert!(gate_psi > 0.05, "{gate_psi}");

    let view = view();
    assert_eq!(
        view.rollout.status,
        edge_protocol::rest::RolloutStatus::Paused
    );
    assert_eq!(
        view.health.psi,
        Some(gate_psi),
        "the live view's PSI is the gate's"
    );
    assert_eq!(
        view.rollout.transitions[0].health.as_ref().unwrap().psi,
        Some(gate_psi)
    );
}

/// Every operation of `/v1/openapi.json` has its schemas: a request body schema where it takes
/// a body, a schema for every path parameter, a response schema for each answer with a body
/// (204 and 304 have none), and the error body for its refusals (public pages excepted).
#[test]
fn every_route_has_request_and_response_schemas() {
    let doc = serde_json::to_value(ota_server::openapi::document()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = &doc["components"]["schemas"];
    let mut checked = 0;
    for route in ota_server::openapi::routes() {
        let op = &doc["paths"][&route.path][&route.method];
        let name = format!("{} {}", route.method, route.path);
        assert!(op["summary"].is_string(), "{name}: summary");
        for p in op["parameters"].as_array().into_iter().flatten() {
            assert!(
                p["schema"].is_object(),
                "{name}: parameter {} schema",
                p["name"]
            );
        }
        let declared = route.path.matches('{').count();
        let in_path = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .count();
        assert_eq!(declared, in_path, "{name}: path parameters documented");
        if let Some(body) = op.get("requestBody") {
            let content = body["content"].as_object().unwrap();
            assert!(!content.is_empty(), "{name}: request body media type");
            for (media, c) in content {
                assert!(c["schema"].is_object(), "{name}: request {media} schema");
            }
        }
        if route.method == "post" && !route.path.contains("/rollouts/{id}/") {
            assert!(op.get("requestBody").is_some(), "{name}: request body");
        }
        let responses = op["responses"].as_object().unwrap();
        let mut success = 0;
        for (status, r) in responses {
            if status == "204" || status == "304" {
                continue;
            }
            let content = r["content"].as_object();
            assert!(
                content
                    .is_some_and(|c| !c.is_empty() && c.values().all(|c| c["schema"].is_object())),
                "{name}: response {status} schema"
            );
            success += u32::from(status.starts_with('2'));
        }
        assert!(
            success > 0 || responses.contains_key("204"),
            "{name}: a success answer"
        );
        if !["/", "/v1/openapi.json", "/healthz"].contains(&route.path.as_str()) {
            let refusal = &responses["4XX"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                refusal, "#/components/schemas/ApiError",
                "{name}: error body"
            );
        }
        checked += 1;
    }
    assert!(checked >= 24, "{checked} operations");
    for s in [
        "RolloutSpec",
        "RolloutView",
        "PhaseHealth",
        "DeviceView",
        "BundleView",
        "ApiError",
        "EnrollRequest",
    ] {
        assert!(schemas[s].is_object(), "schema {s}");
    }
}

/// A rollout of an optimized-payload (nnef) bundle is refused, before any device downloads it,
/// while a targeted device's last hello says it reads only ONNX payloads; the refusal names it.
/// Narrowing the selector past it (or a device that never said hello) lets the rollout start.
#[test]
fn a_rollout_some_targeted_device_cannot_read_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, trust) = signed_trust();
    let (server, records) = serve(dir.path(), trust);
    let (operator, _) = create_token(&records, "ops", Role::Operator, 0).unwrap();
    let (code, text) = call(
        "POST",
        &format!("{}/v1/bundles", server.url),
        Some(&operator),
        Some(("application/octet-stream", digits(&signer, "1.0.0"))),
        &[],
    );
    assert_eq!(code, 201, "{text}");
    let bundle: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(bundle["payload_format"], "nnef", "{text}");
    let sha = bundle["sha256"].as_str().unwrap().to_string();
    let reporting = |id: &str, site: &str, formats: &[&str]| {
        let mut d = common::device_record(id, &[("site", site)]);
        d.reported = Some(edge_protocol::rest::Reported {
            at: 1,
            applied_generation: 0,
            models: vec![],
            dropped_telemetry: 0,
            payload_formats: formats.iter().map(|f| f.to_string()).collect(),
            engines: vec!["cpu".into()],
        });
        records.put(Table::Devices, id, &d).unwrap();
    };
    reporting("dev-new", "a", &["nnef"]);
    reporting("dev-old", "b", &["onnx"]);
    records
        .put(
            Table::Devices,
            "dev-silent",
            &common::device_record("dev-silent", &[("site", "a")]),
        )
        .unwrap();
    let create = |selector: &str| {
        let spec = serde_json::json!({
            "bundle": format!("sha256:{sha}"),
            "selector": selector,
            "phases": [{"percent": 100.0, "soak_seconds": 0}],
        });
        call(
            "POST",
            &format!("{}/v1/rollouts", server.url),
            Some(&operator),
            Some(("application/json", spec.to_string().into_bytes())),
            &[],
        )
    };
    let (code, text) = create("");
    assert_eq!(code, 409, "{text}");
    assert!(
        text.contains("dev-old") && !text.contains("dev-new") && text.contains("'nnef'"),
        "{text}"
    );
    let (code, text) = create("site=a");
    assert_eq!(code, 201, "{text}");
}
