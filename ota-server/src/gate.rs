//! The devices' MQTT front door: a small MQTT 3.1.1 proxy in front of the embedded broker that
//! authenticates each device and holds it to its own topics (rumqttd has authentication hooks
//! but no topic ACLs). Per connection it:
//!
//! - admits devices only while the server's own client is subscribed (else CONNACK "server
//!   unavailable"): what a device says must not reach a broker nobody listens to;
//! - reads the CONNECT: the client id must equal the username, the password must be that
//!   device's token, a will (if any) must be on the device's own status topic; otherwise it
//!   answers CONNACK "bad username or password" / "not authorized" and closes;
//! - forwards everything the broker sends unchanged, except that the PUBACK of a message on the
//!   device's `up` topic is held until the server's ingest has committed that message
//!   ([`crate::acks`]): the device keeps a message in its outbox until it is in the store, so a
//!   server killed in between loses nothing (after a minute without the commit the gate closes
//!   the connection and the device sends the message again);
//! - parses every packet the device sends: a PUBLISH only to its `up` or `status` topic, a
//!   SUBSCRIBE only to its `desired` topic; anything else closes the connection (MQTT 3.1.1 has
//!   no way to refuse a single publish);
//! - rate-limits the device's publishes (a token bucket; past the burst the gate stops reading,
//!   so TCP backpressure slows the device down rather than the broker filling up).
//!
//! The gate runs over any byte stream: with TLS (the default) it wraps the accepted socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_protocol::topics;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::acks::IngestAcks;

/// Checks a device's credentials: `(device id, token) → allowed`.
pub type DeviceAuth = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Gate limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest packet a device may send, bytes.
    pub max_packet: usize,
    /// Sustained publishes per second per device.
    pub publish_per_s: f64,
    /// Burst of publishes allowed above the rate.
    pub publish_burst: f64,
    /// Time allowed for the CONNECT to arrive.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet: edge_protocol::envelope::MAX_MESSAGE_BYTES + 4096,
            publish_per_s: 20.0,
            publish_burst: 200.0,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection was closed by the gate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// Not MQTT 3.1.1 or not parseable.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Bad credentials.
    #[error("device '{0}' failed authentication")]
    Credentials(String),
    /// Publish / subscribe / will outside the device's topics.
    #[error("device '{device}' may not {what} '{topic}'")]
    Topic {
        /// Device.
        device: String,
        /// publish / subscribe / set a will on.
        what: &'static str,
        /// Topic or filter.
        topic: String,
    },
}

/// One MQTT packet: the first byte, and the bytes after the remaining-length field.
struct Packet {
    first: u8,
    body: Vec<u8>,
}

impl Packet {
    fn kind(&self) -> u8 {
        self.first >> 4
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.first];
        let mut len = self.body.len();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// How long the gate holds a PUBACK for the ingest before it gives up on the connection.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// The packet id and claimed sequence number of a QoS 1 PUBLISH on `device`'s up topic.
fn held_publish(device: &str, p: &Packet) -> Option<(u16, u64)> {
    if p.kind() != 3 || (p.first >> 1) & 3 != 1 {
        return None;
    }
    let mut f = Fields(&p.body);
    if f.string().ok()? != topics::up(device) {
        return None;
    }
    let id = f.u16().ok()?;
    Some((id, edge_protocol::envelope::unverified_seq(f.0)?))
}

/// Reads one packet; `Ok(None)` at a clean end of stream.
async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Packet>, Refused> {
    let mut first = [0u8; 1];
    match r.read_exact(&mut first).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Refused::Protocol(e.to_string())),
    }
    let mut len = 0usize;
    for i in 0..4 {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)
            .await
            .map_err(|e| Refused::Protocol(e.to_string()))?;
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            if len > max {
                return Err(Refused::Protocol(format!(
                    "packet of {len} bytes is over the {max}-byte limit"
                )));
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body)
                .await
                .map_err(|e| Refused::Protocol(e.to_string()))?;
            return Ok(Some(Packet {
                first: first[0],
                body,
            }));
        }
    }
    Err(Refused::Protocol("remaining length over 4 bytes".into()))
}

/// A cursor over a packet body.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        if self.0.len() < n {
            return Err(Refused::Protocol("packet is truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Refused> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Refused> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Refused> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, Refused> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| Refused::Protocol("string is not UTF-8".into()))
    }
}

/// The parts of a CONNECT the gate checks.
#[derive(Debug, PartialEq, Eq)]
struct Connect {
    level: u8,
    client_id: String,
    will_topic: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn parse_connect(body: &[u8]) -> Result<Connect, Refused> {
    let mut f = Fields(body);
    let name = f.string()?;
    let level = f.u8()?;
    if name != "MQTT" {
        return Err(Refused::Protocol(format!("protocol name '{name}'")));
    }
    let flags = f.u8()?;
    let _keep_alive = f.u16()?;
    if level != 4 {
        return Ok(Connect {
            level,
            client_id: String::new(),
            will_topic: None,
            username: None,
            password: None,
        });
    }
    let client_id = f.string()?;
    let will_topic = if flags & 0x04 != 0 {
        let topic = f.string()?;
        let _message = f.bytes()?;
        Some(topic)
    } else {
        None
    };
    let username = (flags & 0x80 != 0).then(|| f.string()).transpose()?;
    let password = (flags & 0x40 != 0)
        .then(|| f.bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
        .transpose()?;
    Ok(Connect {
        level,
        client_id,
        will_topic,
        username,
        password,
    })
}

/// The topic of a PUBLISH body.
fn publish_topic(body: &[u8]) -> Result<String, Refused> {
    Fields(body).string()
}

/// The filters of a SUBSCRIBE body.
fn subscribe_filters(body: &[u8]) -> Result<Vec<String>, Refused> {
    let mut f = Fields(body);
    let _packet_id = f.u16()?;
    let mut filters = Vec::new();
    while !f.0.is_empty() {
        filters.push(f.string()?);
        let _qos = f.u8()?;
    }
    if filters.is_empty() {
        return Err(Refused::Protocol("SUBSCRIBE without filters".into()));
    }
    Ok(filters)
}

/// Checks one packet a device sends after its CONNECT.
fn check(device: &str, p: &Packet) -> Result<(), Refused> {
    match p.kind() {
        1 => Err(Refused::Protocol("second CONNECT".into())),
        3 => {
            let topic = publish_topic(&p.body)?;
            if topic == topics::up(device) || topic == topics::status(device) {
                Ok(())
            } else {
                Err(Refused::Topic {
                    device: device.into(),
                    what: "publish to",
                    topic,
                })
            }
        }
        8 => {
            for filter in subscribe_filters(&p.body)? {
                if filter != topics::desired(device) {
                    return Err(Refused::Topic {
                        device: device.into(),
                        what: "subscribe to",
                        topic: filter,
                    });
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// CONNACK with a return code (0 accepted, 1 bad protocol level, 4 bad credentials, 5 not
/// authorized).
fn connack(code: u8) -> [u8; 4] {
    [0x20, 2, 0, code]
}

/// Serves one device connection until either side closes. Returns why the gate closed it, if
/// it did.
pub async fn serve_connection<C>(
    mut client: C,
    upstream: SocketAddr,
    auth: DeviceAuth,
    limits: Limits,
    ready: Arc<AtomicBool>,
    acks: Option<Arc<IngestAcks>>,
) -> Result<(), Refused>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = tokio::time::timeout(
        limits.connect_timeout,
        read_packet(&mut client, limits.max_packet),
    )
    .await
    .map_err(|_| Refused::Protocol("no CONNECT in time".into()))??
    .ok_or_else(|| Refused::Protocol("closed before CONNECT".into()))?;
    if first.kind() != 1 {
        return Err(Refused::Protocol("first packet is not CONNECT".into()));
    }
    if !ready.load(Ordering::Relaxed) {
        // the server is not listening yet: "server unavailable", the device retries
        let _ = client.write_all(&connack(3)).await;
        return Err(Refused::Protocol("server not ready yet".into()));
    }
    let connect = parse_connect(&first.body)?;
    if connect.level != 4 {
        let _ = client.write_all(&connack(1)).await;
        return Err(Refused::Protocol(format!(
            "MQTT protocol level {} (only 3.1.1, level 4)",
            connect.level
        )));
    }
    let device = connect.client_id.clone();
    let password = connect.password.clone().unwrap_or_default();
    let valid_id = topics::validate_device_id(&device).is_ok()
        && connect.username.as_deref() == Some(device.as_str());
    let ok = valid_id && {
        let (auth, d, p) = (auth.clone(), device.clone(), password);
        tokio::task::spawn_blocking(move || auth(&d, &p))
            .await
            .unwrap_or(false)
    };
    if !ok {
        let _ = client.write_all(&connack(4)).await;
        return Err(Refused::Credentials(device));
    }
    if let Some(topic) = connect.will_topic.filter(|t| *t != topics::status(&device)) {
        let _ = client.write_all(&connack(5)).await;
        return Err(Refused::Topic {
            device,
            what: "set a will on",
            topic,
        });
    }
    let mut broker = TcpStream::connect(upstream)
        .await
        .map_err(|e| Refused::Protocol(format!("broker unreachable: {e}")))?;
    let _ = broker.set_nodelay(true);
    broker
        .write_all(&first.encode())
        .await
        .map_err(|e| Refused::Protocol(e.to_string()))?;
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    // packet id → sequence number of the device's publishes whose PUBACK waits for the ingest
    let held: Arc<std::sync::Mutex<HashMap<u16, u64>>> = Arc::default();
    let down = {
        let (held, device) = (held.clone(), device.clone());
        tokio::spawn(async move {
            match acks {
                None => {
                    let _ = tokio::io::copy(&mut broker_rx, &mut client_tx).await;
                }
                Some(acks) => loop {
                    let Ok(Some(packet)) = read_packet(&mut broker_rx, usize::MAX).await else {
                        break;
                    };
                    if packet.kind() == 4 && packet.body.len() >= 2 {
                        let id = u16::from_be_bytes([packet.body[0], packet.body[1]]);
                        let seq = held.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                        if let Some(seq) = seq {
                            if !acks.wait(&device, seq, ACK_WAIT).await {
                                tracing::warn!(%device, seq, "message not ingested in time; \
                                    closing the connection (the device sends it again)");
                                break;
                            }
                        }
                    }
                    if client_tx.write_all(&packet.encode()).await.is_err() {
                        break;
                    }
                },
            }
            let _ = client_tx.shutdown().await;
        })
    };
    let mut bucket = limits.publish_burst;
    let mut refilled = Instant::now();
    let result = loop {
        let packet = match read_packet(&mut client_rx, limits.max_packet).await {
            Ok(Some(p)) => p,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if let Err(e) = check(&device, &packet) {
            break Err(e);
        }
        if let Some((id, seq)) = held_publish(&device, &packet) {
            held.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, seq);
        }
        if packet.kind() == 3 {
            let now = Instant::now();
            bucket = (bucket + now.duration_since(refilled).as_secs_f64() * limits.publish_per_s)
                .min(limits.publish_burst);
            refilled = now;
            if bucket < 1.0 {
                let wait = (1.0 - bucket) / limits.publish_per_s;
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                bucket = 1.0;
                refilled = Instant::now();
            }
            bucket -= 1.0;
        }
        if broker_tx.write_all(&packet.encode()).await.is_err() {
            break Ok(());
        }
    };
    let _ = broker_tx.shutdown().await;
    down.abort();
    result
}

/// Accepts device connections on `listener` until the task is dropped, each served by
/// [`serve_connection`], over TLS when `tls` is given (handshake in the connection's task).
pub async fn run(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    auth: DeviceAuth,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ready: Arc<AtomicBool>,
    acks: Option<Arc<IngestAcks>>,
) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "mqtt accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let (auth, tls, ready, acks) = (auth.clone(), tls.clone(), ready.clone(), acks.clone());
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.connect_timeout, acceptor.accept(socket))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, upstream, auth, limits, ready, acks).await
                        }
                        Ok(Err(e)) => Err(Refused::Protocol(format!("TLS handshake: {e}"))),
                        Err(_) => Err(Refused::Protocol("TLS handshake timed out".into())),
                    }
                }
                None => serve_connection(socket, upstream, auth, limits, ready, acks).await,
            };
            if let Err(e) = result {
                tracing::warn!(%peer, reason = %e, "mqtt connection closed by the gate");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn connect_fields_are_read() {
        let mut body = string("MQTT");
        body.extend([4, 0x80 | 0x40 | 0x04 | 0x02, 0, 30]);
        body.extend(string("dev-1"));
        body.extend(string(&topics::status("dev-1")));
        body.extend(string("offline"));
        body.extend(string("dev-1"));
        body.extend(string("efd_x"));
        let c = parse_connect(&body).unwrap();
        assert_eq!(c.client_id, "dev-1");
        assert_eq!(
            c.will_topic.as_deref(),
            Some(topics::status("dev-1").as_str())
        );
        assert_eq!(c.username.as_deref(), Some("dev-1"));
        assert_eq!(c.password.as_deref(), Some("efd_x"));
        assert!(parse_connect(&body[..body.len() - 3]).is_err(), "truncated");
    }

    #[test]
    fn devices_are_held_to_their_topics() {
        let publish = |t: &str| Packet {
            first: 0x32,
            body: [string(t), vec![0, 1], b"x".to_vec()].concat(),
        };
        let subscribe = |fs: &[&str]| Packet {
            first: 0x82,
            body: [
                vec![0, 1],
                fs.iter()
                    .flat_map(|f| [string(f), vec![1]].concat())
                    .collect(),
            ]
            .concat(),
        };
        assert!(check("dev-1", &publish(&topics::up("dev-1"))).is_ok());
        assert!(check("dev-1", &publish(&topics::status("dev-1"))).is_ok());
        assert!(check("dev-1", &publish(&topics::up("dev-2"))).is_err());
        assert!(check("dev-1", &publish(&topics::desired("dev-1"))).is_err());
        assert!(check("dev-1", &subscribe(&[&topics::desired("dev-1")])).is_ok());
        assert!(check("dev-1", &subscribe(&[&topics::desired("dev-1"), "#"])).is_err());
        assert!(check("dev-1", &subscribe(&[&topics::desired("+")])).is_err());
        assert!(check(
            "dev-1",
            &Packet {
                first: 0x82,
                body: vec![0, 1]
            }
        )
        .is_err());
        assert!(
            check(
                "dev-1",
                &Packet {
                    first: 0xc0,
                    body: vec![]
                }
            )
            .is_ok(),
            "PINGREQ"
        );
    }

    #[test]
    fn packets_round_trip_through_encode() {
        let p = Packet {
            first: 0x30,
            body: vec![7; 300],
        };
        let bytes = p.encode();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let back = rt
            .block_on(read_packet(&mut &bytes[..], 1000))
            .unwrap()
            .unwrap();
        assert_eq!((back.first, back.body), (p.first, p.body));
        let err = rt.block_on(read_packet(&mut &bytes[..], 100)).err();
        assert!(matches!(err, Some(Refused::Protocol(m)) if m.contains("over")));
    }
}
