//! The device-facing edges of a real `ota-server`: MQTT over TLS through the gate (credentials,
//! topic ACLs, the fleet CA pinned) and the rate limit on the device HTTP routes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_protocol::topics;
use fleet_tests::{call, free_port, wait_for, Agent, Keys, Server};
use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS, Transport,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::json;

/// How a client's connection went.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// CONNACK accepted, then the connection was closed by the other side.
    ClosedAfterConnect,
    /// CONNACK accepted and still up after the action.
    StillUp,
    /// CONNACK refused with this code.
    Refused(ConnectReturnCode),
    /// No CONNACK at all (TLS or transport failure).
    NoConnect(String),
}

fn tls(ca: Option<&[u8]>) -> Transport {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                roots.add(c.unwrap()).unwrap();
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

/// Connects as `client_id` with `user`/`password`, then runs `act` once connected, and reports
/// what happened within a few seconds.
fn attempt(
    port: u16,
    transport: Option<Transport>,
    client_id: &str,
    user: &str,
    password: &str,
    act: impl FnOnce(&Client),
) -> Outcome {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_credentials(user, password);
    options.set_keep_alive(Duration::from_secs(5));
    if let Some(t) = transport {
        options.set_transport(t);
    }
    let (client, mut connection) = Client::new(options, 16);
    let mut act = Some(act);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut connected = false;
    while Instant::now() < deadline {
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                connected = true;
                if let Some(a) = act.take() {
                    a(&client);
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => return Outcome::Refused(code),
            Ok(Err(e)) => {
                return if connected {
                    Outcome::ClosedAfterConnect
                } else {
                    Outcome::NoConnect(e.to_string())
                }
            }
        }
    }
    if connected {
        Outcome::StillUp
    } else {
        Outcome::NoConnect("timed out".into())
    }
}

#[test]
fn devices_are_authenticated_held_to_their_topics_and_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let data = dir.path().join("server");
    Server::init(&data, &keys);
    let mqtt_port = free_port();
    // device HTTP routes limited to 1 request/s per address, burst 5
    let server = Server::start_with(&data, free_port(), mqtt_port, &["--device-rate", "1"]);
    let token = server.api(
        "POST",
        "/v1/enrollment-tokens",
        Some((
            "application/json",
            json!({"name": "t"}).to_string().into_bytes(),
        )),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    // two real agents enroll (over https, pinning the fleet CA), then stop
    let device_token = |id: &str| {
        let agent = Agent::start(id, &dir.path().join(id), &keys, &server, &token);
        let path = dir.path().join(id).join("state/enrollment.json");
        let t = wait_for(
            &format!("{id} to enroll"),
            Duration::from_secs(60),
            || {
                let text = std::fs::read_to_string(&path).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                v["device_token"].as_str().map(str::to_string)
            },
            || agent.log_text(),
        );
        drop(agent);
        t
    };
    let (a, _b) = (device_token("dev-a"), device_token("dev-b"));
    let ca = std::fs::read(server.ca()).unwrap();
    let ca = Some(&ca[..]);

    // its own topics: fine
    let own = attempt(mqtt_port, Some(tls(ca)), "dev-a", "dev-a", &a, |c| {
        c.subscribe(topics::desired("dev-a"), QoS::AtLeastOnce)
            .unwrap();
        c.publish(topics::status("dev-a"), QoS::AtLeastOnce, false, "online")
            .unwrap();
    });
    assert_eq!(own, Outcome::StillUp);
    // another device's topics: the gate closes the connection
    let spy = attempt(mqtt_port, Some(tls(ca)), "dev-a", "dev-a", &a, |c| {
        c.subscribe(topics::desired("dev-b"), QoS::AtLeastOnce)
            .unwrap();
    });
    assert_eq!(spy, Outcome::ClosedAfterConnect);
    let wildcard = attempt(mqtt_port, Some(tls(ca)), "dev-a", "dev-a", &a, |c| {
        c.subscribe("edgefleet/v1/devices/#", QoS::AtLeastOnce)
            .unwrap();
    });
    assert_eq!(wildcard, Outcome::ClosedAfterConnect);
    let forge = attempt(mqtt_port, Some(tls(ca)), "dev-a", "dev-a", &a, |c| {
        c.publish(topics::up("dev-b"), QoS::AtLeastOnce, false, vec![0u8; 8])
            .unwrap();
    });
    assert_eq!(forge, Outcome::ClosedAfterConnect);
    // credentials: a wrong token, or a token used for another id
    let wrong = attempt(
        mqtt_port,
        Some(tls(ca)),
        "dev-a",
        "dev-a",
        "efd_nope",
        |_| {},
    );
    assert_eq!(
        wrong,
        Outcome::Refused(ConnectReturnCode::BadUserNamePassword)
    );
    let borrowed = attempt(mqtt_port, Some(tls(ca)), "dev-b", "dev-b", &a, |_| {});
    assert_eq!(
        borrowed,
        Outcome::Refused(ConnectReturnCode::BadUserNamePassword)
    );
    // TLS: the fleet CA must be pinned (the public roots do not know it); no plaintext
    let unpinned = attempt(mqtt_port, Some(tls(None)), "dev-a", "dev-a", &a, |_| {});
    assert!(matches!(unpinned, Outcome::NoConnect(_)), "{unpinned:?}");
    let plain = attempt(mqtt_port, None, "dev-a", "dev-a", &a, |_| {});
    assert!(matches!(plain, Outcome::NoConnect(_)), "{plain:?}");
    let (code, _) = call(
        "GET",
        &server.u("/healthz").replace("https", "http"),
        None,
        None,
    );
    assert_ne!(code, 200, "no plaintext HTTP on the TLS port");

    // device HTTP routes are rate-limited per address: past the burst, 429 with Retry-After
    let mut codes = Vec::new();
    for _ in 0..30 {
        let (code, _) = call(
            "POST",
            &server.u("/v1/devices/enroll"),
            None,
            Some(("application/json", b"{}".to_vec())),
        );
        codes.push(code);
    }
    assert!(
        codes.contains(&400),
        "bad enrollments are answered: {codes:?}"
    );
    assert!(codes.contains(&429), "then limited: {codes:?}");
    let metrics = call("GET", &server.u("/metrics"), Some(&server.admin), None).1;
    assert!(
        !metrics.contains("edgefleet_rate_limited_total 0\n"),
        "{metrics}"
    );
}
