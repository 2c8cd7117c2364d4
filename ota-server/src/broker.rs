//! The embedded MQTT broker (rumqttd, DESIGN "Embedded defaults"): listens on a loopback port
//! only the server itself and the device gate ([`crate::gate`]) connect to. Connections must
//! carry either the server's own random credentials or a valid device token (checked again
//! here, so a local process that skips the gate gains nothing).

use std::net::{SocketAddr, TcpListener};

use crate::gate::DeviceAuth;

/// A running embedded broker.
pub struct Embedded {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// The server's own username and password on it.
    pub credentials: (String, String),
}

/// The username the server connects with.
pub const SERVER_CLIENT: &str = "ota-server";

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts the broker on its own thread.
pub fn start(auth: DeviceAuth, max_connections: usize) -> anyhow::Result<Embedded> {
    let port = free_loopback_port()?;
    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let password = hex::encode(secret);
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = {max_connections}
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "internal"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = {payload}
max_inflight_count = 100
dynamic_filters = true
"#,
        payload = edge_protocol::envelope::MAX_MESSAGE_BYTES + 4096
    );
    let mut config: rumqttd::Config = toml::from_str(&text)?;
    let pw = password.clone();
    if let Some(v4) = config.v4.as_mut() {
        for server in v4.values_mut() {
            let (auth, pw) = (auth.clone(), pw.clone());
            server.set_auth_handler(move |client_id: String, user: String, pass: String| {
                let (auth, pw) = (auth.clone(), pw.clone());
                async move {
                    if client_id == SERVER_CLIENT {
                        return user == SERVER_CLIENT && pass == pw;
                    }
                    client_id == user
                        && tokio::task::spawn_blocking(move || auth(&user, &pass))
                            .await
                            .unwrap_or(false)
                }
            });
        }
    }
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    // no probe connection here (the broker would log it as a failed client): the server's own
    // client and the gate retry until the listener is up
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Ok(Embedded {
        addr,
        credentials: (SERVER_CLIENT.to_string(), password),
    })
}
