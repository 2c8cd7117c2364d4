//! The devices' MQTT front door: the server terminates MQTT 3.1.1 itself (issue 26: no broker
//! between the devices and the server, one descriptor per connected device), authenticates
//! each device and holds it to its own topics. Per connection it:
//!
//! - admits devices only while the fleet loop listens (else CONNACK "server unavailable"): what
//!   a device says must not arrive where nobody reads it;
//! - reads the CONNECT: the client id must equal the username, the password must be that
//!   device's token, a will (if any) must be on the device's own status topic; otherwise it
//!   answers CONNACK "bad username or password" / "not authorized" and closes;
//! - parses every packet the device sends: a PUBLISH only to its `up` or `status` topic (QoS 0
//!   or 1), a SUBSCRIBE only to its `desired` topic; anything else closes the connection (MQTT
//!   3.1.1 has no way to refuse a single publish). Publishes go to the ingest through the
//!   [`crate::hub`]; while its queue is full the gate reads up to 16 publishes ahead and goes
//!   on answering pings (a device whose pings went unanswered would reconnect, and a fleet
//!   reconnecting at once is the storm that a slow ingest must not start), then stops
//!   reading; the PUBACK of a message on the `up` topic is held until the ingest has
//!   committed it ([`crate::acks`]): the device keeps a message in its outbox until it is in the
//!   store, so a server killed in between loses nothing (if the ingest gives the message up,
//!   or after `ACK_WAIT`, 15 minutes, without the commit, the gate closes the connection and
//!   the device sends the message again);
//! - sends the device its desired states from the hub (the retained one when it subscribes,
//!   later ones as they are published), answers pings, and publishes the device's will if it
//!   vanishes without DISCONNECT (or stays silent past 1.5 keep-alive periods);
//! - rate-limits the device's publishes (a token bucket; past the burst the gate stops reading,
//!   so TCP backpressure slows the device down rather than a queue filling up).
//!
//! The gate runs over any byte stream: with TLS (the default) it wraps the accepted socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_protocol::topics;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::acks::{IngestAcks, Settled};
use crate::hub::{Hub, Out, FULL_QUEUE_WAIT};
use crate::ingest::Uplink;

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

/// How long the gate holds a PUBACK for the ingest before it gives up on the connection: a
/// backstop only. A batch the ingest gave up on closes the connection at once
/// ([`IngestAcks::failed`]); a late one (the ingest behind under load) is waited for, since
/// closing would bring the same messages back and deepen the backlog.
const ACK_WAIT: Duration = Duration::from_secs(15 * 60);

/// [`read_packet`] owning its reader and handing it back, so that a read in progress can stay
/// pending across the connection loop's other work (a dropped read would lose bytes).
async fn read_owned<R: AsyncRead + Unpin>(
    mut r: R,
    max: usize,
) -> (R, Result<Option<Packet>, Refused>) {
    let packet = read_packet(&mut r, max).await;
    (r, packet)
}

/// Publishes a connection reads ahead of a full ingest queue before it stops reading (TCP
/// backpressure then slows the device down).
const PENDING_PUBLISHES: usize = 16;

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
    keep_alive: u16,
    client_id: String,
    will_topic: Option<String>,
    will_message: Option<Vec<u8>>,
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
    let keep_alive = f.u16()?;
    if level != 4 {
        return Ok(Connect {
            level,
            keep_alive,
            client_id: String::new(),
            will_topic: None,
            will_message: None,
            username: None,
            password: None,
        });
    }
    let client_id = f.string()?;
    let (will_topic, will_message) = if flags & 0x04 != 0 {
        (Some(f.string()?), Some(f.bytes()?.to_vec()))
    } else {
        (None, None)
    };
    let username = (flags & 0x80 != 0).then(|| f.string()).transpose()?;
    let password = (flags & 0x40 != 0)
        .then(|| f.bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
        .transpose()?;
    Ok(Connect {
        level,
        keep_alive,
        client_id,
        will_topic,
        will_message,
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

/// A two-byte acknowledgement (PUBACK 0x40, UNSUBACK 0xb0) of packet `id`.
fn ack(first: u8, id: u16) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    vec![first, 2, hi, lo]
}

/// A QoS 1 PUBLISH of `payload` on `topic`.
fn publish_packet(topic: &str, id: u16, payload: &[u8], retained: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + 4 + payload.len());
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    Packet {
        first: 0x32 | u8::from(retained),
        body,
    }
    .encode()
}

/// A device's PUBLISH, read: QoS, packet id, topic, payload.
struct Publish<'a> {
    qos: u8,
    id: u16,
    topic: String,
    payload: &'a [u8],
}

fn parse_publish(p: &Packet) -> Result<Publish<'_>, Refused> {
    let qos = (p.first >> 1) & 3;
    let mut f = Fields(&p.body);
    let topic = f.string()?;
    let id = if qos > 0 { f.u16()? } else { 0 };
    if qos > 1 {
        return Err(Refused::Protocol(
            "QoS 2 is not supported (use QoS 0 or 1)".into(),
        ));
    }
    Ok(Publish {
        qos,
        id,
        topic,
        payload: f.0,
    })
}

/// A PUBACK the writer owes the device: packet id, and the message it waits for (sequence
/// number and deadline), if any.
type OwedAck = (u16, Option<(u64, tokio::time::Instant)>);

/// Writes what the hub and the reader queue for the device until the queue closes, the hub says
/// close, the device is gone, or a held PUBACK's message is not ingested in time. PUBACKs go
/// out in the order of the device's publishes (MQTT 4.6.0-2), each when its message is
/// committed; everything else goes out at once, so a desired state never waits for the ingest.
async fn write_to_device<W: AsyncWrite + Unpin>(
    mut tx: W,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Out>,
    device: String,
    acks: Arc<IngestAcks>,
) {
    let topic = topics::desired(&device);
    let mut next_id: u16 = 0;
    let mut owed: std::collections::VecDeque<OwedAck> = Default::default();
    loop {
        // the PUBACKs at the head whose messages are done
        let mut ready = Vec::new();
        while let Some(&(id, wait)) = owed.front() {
            if wait.is_some_and(|(seq, _)| !acks.reached(&device, seq)) {
                break;
            }
            owed.pop_front();
            ready.extend_from_slice(&ack(0x40, id));
        }
        if !ready.is_empty() && tx.write_all(&ready).await.is_err() {
            break;
        }
        let head = owed.front().and_then(|(_, wait)| *wait);
        let out = tokio::select! {
            out = rx.recv() => out,
            done = async {
                match head {
                    Some((seq, deadline)) => acks.wait_until(&device, seq, deadline).await,
                    None => std::future::pending().await,
                }
            } => {
                let seq = head.map_or(0, |(seq, _)| seq);
                match done {
                    Settled::Done => continue,
                    Settled::Failed => tracing::warn!(%device, seq, "message not ingested; \
                        closing the connection (the device sends it again)"),
                    Settled::TimedOut => tracing::warn!(%device, seq, "message not ingested \
                        in time; closing the connection (the device sends it again)"),
                }
                break;
            }
        };
        let bytes = match out {
            None | Some(Out::Close) => break,
            Some(Out::Packet(bytes)) => bytes,
            Some(Out::Desired { payload, retained }) => {
                next_id = next_id.checked_add(1).unwrap_or(1);
                publish_packet(&topic, next_id, &payload, retained)
            }
            Some(Out::Puback { id, seq }) => {
                let deadline = tokio::time::Instant::now() + ACK_WAIT;
                owed.push_back((id, seq.map(|seq| (seq, deadline))));
                continue;
            }
        };
        if tx.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = tx.shutdown().await;
}

/// Serves one device connection until either side closes, terminating MQTT 3.1.1 here: the
/// device's messages go to the hub's ingest queue, its desired states come from the hub.
/// Returns why the gate closed it, if it did.
pub async fn serve_connection<C>(
    mut client: C,
    hub: Arc<Hub>,
    auth: DeviceAuth,
    limits: Limits,
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
    if !hub.ready() {
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
    if let Some(topic) = connect
        .will_topic
        .as_ref()
        .filter(|t| **t != topics::status(&device))
    {
        let _ = client.write_all(&connack(5)).await;
        return Err(Refused::Topic {
            device,
            what: "set a will on",
            topic: topic.clone(),
        });
    }
    let session = hub.connect(&device);
    let _ = session.out.send(Out::Packet(connack(0).to_vec()));
    let (client_rx, client_tx) = tokio::io::split(client);
    let mut writer = tokio::spawn(write_to_device(
        client_tx,
        session.rx,
        device.clone(),
        hub.acks.clone(),
    ));
    // MQTT: a client silent for one and a half keep-alive periods is gone
    let silence = match connect.keep_alive {
        0 => Duration::from_secs(24 * 3600),
        s => Duration::from_millis(u64::from(s) * 1500),
    };
    let (up_topic, status_topic) = (topics::up(&device), topics::status(&device));
    let mut bucket = limits.publish_burst;
    let mut refilled = Instant::now();
    let mut clean = false;
    // publishes read but not yet in the ingest queue, with the reply each owes once it is: the
    // loop goes on reading (and answering pings) while the ingest is behind, up to a bound,
    // so a slow ingest delays acknowledgements instead of timing devices out
    let mut pending: VecDeque<(Uplink, Option<Out>)> = VecDeque::new();
    let mut read = Box::pin(read_owned(client_rx, limits.max_packet));
    let mut deadline = tokio::time::Instant::now() + silence;
    let result = loop {
        // what the ingest queue takes now, in order; a reply goes out after its message
        let mut handed = false;
        while let Some((message, reply)) = pending.pop_front() {
            match hub.try_uplink(message) {
                Ok(()) => {
                    handed = true;
                    if let Some(out) = reply {
                        let _ = session.out.send(out);
                    }
                }
                Err(Some(message)) => {
                    pending.push_front((message, reply));
                    break;
                }
                Err(None) => break, // shutting down: unacknowledged, the device sends it again
            }
        }
        if handed {
            // not listening while the queue was full is not the device's silence
            deadline = deadline.max(tokio::time::Instant::now() + silence);
        }
        let reading = pending.len() < PENDING_PUBLISHES;
        let read_result = tokio::select! {
            (reader, r) = &mut read, if reading => {
                read = Box::pin(read_owned(reader, limits.max_packet));
                deadline = tokio::time::Instant::now() + silence;
                r
            }
            _ = tokio::time::sleep_until(deadline), if reading => {
                break Err(Refused::Protocol("keep-alive expired".into()))
            }
            _ = tokio::time::sleep(FULL_QUEUE_WAIT), if !pending.is_empty() => continue,
            _ = &mut writer => break Ok(()),
        };
        let packet = match read_result {
            Ok(Some(p)) => p,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if let Err(e) = check(&device, &packet) {
            break Err(e);
        }
        let reply = match packet.kind() {
            3 => {
                let now = Instant::now();
                bucket = (bucket
                    + now.duration_since(refilled).as_secs_f64() * limits.publish_per_s)
                    .min(limits.publish_burst);
                refilled = now;
                if bucket < 1.0 {
                    let wait = (1.0 - bucket) / limits.publish_per_s;
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                    bucket = 1.0;
                    refilled = Instant::now();
                }
                bucket -= 1.0;
                let publish = match parse_publish(&packet) {
                    Ok(p) => p,
                    Err(e) => break Err(e),
                };
                let on_up = publish.topic == up_topic;
                let message = if publish.topic == status_topic {
                    Uplink::Status {
                        device: device.clone(),
                        online: publish.payload == b"online",
                    }
                } else {
                    Uplink::Up {
                        device: device.clone(),
                        payload: publish.payload.to_vec(),
                    }
                };
                let reply = (publish.qos == 1).then(|| Out::Puback {
                    id: publish.id,
                    // a message on `up` is acknowledged once committed (a status at once)
                    seq: on_up
                        .then(|| edge_protocol::envelope::unverified_seq(publish.payload))
                        .flatten(),
                });
                pending.push_back((message, reply));
                None
            }
            8 => {
                let mut f = Fields(&packet.body);
                let id = f.u16().unwrap_or(0);
                let granted = subscribe_filters(&packet.body).map_or(0, |f| f.len());
                let mut body = id.to_be_bytes().to_vec();
                body.extend(std::iter::repeat_n(1u8, granted)); // QoS 1 for each filter
                let suback = Packet { first: 0x90, body };
                let _ = session.out.send(Out::Packet(suback.encode()));
                hub.subscribe(&device, session.session);
                None
            }
            10 => {
                let id = Fields(&packet.body).u16().unwrap_or(0);
                hub.unsubscribe(&device, session.session);
                Some(Out::Packet(ack(0xb0, id)))
            }
            12 => Some(Out::Packet(vec![0xd0, 0])),
            14 => {
                clean = true;
                break Ok(());
            }
            4 => None, // the device acknowledges a desired state
            other => {
                break Err(Refused::Protocol(format!(
                    "MQTT packet type {other} from a device"
                )))
            }
        };
        if let Some(out) = reply {
            let _ = session.out.send(out);
        }
    };
    if clean {
        // a clean DISCONNECT: what the device sent before it is handed over first
        for (message, reply) in pending.drain(..) {
            if !hub.uplink(message).await {
                break;
            }
            if let Some(out) = reply {
                let _ = session.out.send(out);
            }
        }
    }
    let current = hub.disconnect(&device, session.session);
    if current && !clean && connect.will_topic.is_some() {
        // the will: the device vanished without DISCONNECT
        let online = connect.will_message.as_deref() == Some(b"online".as_slice());
        let _ = hub
            .uplink(Uplink::Status {
                device: device.clone(),
                online,
            })
            .await;
    }
    if !writer.is_finished() {
        // let the replies already due (PUBACKs of committed messages) go out, briefly
        let _ = session.out.send(Out::Close);
        if tokio::time::timeout(Duration::from_secs(1), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
    result
}

/// Accepts device connections on `listener` until the task is dropped, each served by
/// [`serve_connection`], over TLS when `tls` is given (handshake in the connection's task).
pub async fn run(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    auth: DeviceAuth,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
        let (auth, tls, hub) = (auth.clone(), tls.clone(), hub.clone());
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.connect_timeout, acceptor.accept(socket))
                        .await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, hub, auth, limits).await,
                        Ok(Err(e)) => Err(Refused::Protocol(format!("TLS handshake: {e}"))),
                        Err(_) => Err(Refused::Protocol("TLS handshake timed out".into())),
                    }
                }
                None => serve_connection(socket, hub, auth, limits).await,
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
    use std::sync::atomic::{AtomicBool, Ordering};

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

    /// A device's side of a connection to the gate, over an in-memory stream.
    struct Device {
        io: tokio::io::DuplexStream,
    }

    impl Device {
        async fn send(&mut self, first: u8, body: Vec<u8>) {
            self.io
                .write_all(&Packet { first, body }.encode())
                .await
                .unwrap();
        }

        async fn next(&mut self) -> Option<Packet> {
            tokio::time::timeout(Duration::from_secs(5), read_packet(&mut self.io, 1 << 20))
                .await
                .expect("a packet within 5 s")
                .unwrap()
        }

        async fn quiet(&mut self) -> bool {
            tokio::time::timeout(
                Duration::from_millis(100),
                read_packet(&mut self.io, 1 << 20),
            )
            .await
            .is_err()
        }
    }

    fn connect_body(device: &str, keep_alive: u16, will: bool) -> Vec<u8> {
        let mut body = string("MQTT");
        body.push(4);
        body.push(0x80 | 0x40 | 0x02 | if will { 0x04 | 0x08 } else { 0 });
        body.extend(keep_alive.to_be_bytes());
        body.extend(string(device));
        if will {
            body.extend(string(&topics::status(device)));
            body.extend(string("offline"));
        }
        body.extend(string(device));
        body.extend(string("efd_token"));
        body
    }

    /// Connects `device` to a gate in front of `hub`; the CONNACK code.
    async fn connect(hub: &Arc<Hub>, device: &str, keep_alive: u16) -> (Device, u8) {
        let (d, code, _) = connect_task(hub, device, keep_alive).await;
        (d, code)
    }

    /// [`connect`], with the gate's task for the connection.
    async fn connect_task(
        hub: &Arc<Hub>,
        device: &str,
        keep_alive: u16,
    ) -> (Device, u8, tokio::task::JoinHandle<Result<(), Refused>>) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let auth: DeviceAuth = Arc::new(|_, token| token == "efd_token");
        let task = tokio::spawn(serve_connection(
            theirs,
            hub.clone(),
            auth,
            Limits::default(),
        ));
        let mut d = Device { io: ours };
        d.send(0x10, connect_body(device, keep_alive, true)).await;
        let connack = d.next().await.unwrap();
        assert_eq!(connack.kind(), 2);
        (d, connack.body[1], task)
    }

    fn uplinks(rx: &std::sync::mpsc::Receiver<Uplink>) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(50));
        rx.try_iter()
            .map(|m| match m {
                Uplink::Up { device, payload } => format!("{device} up {}", payload.len()),
                Uplink::Status { device, online } => format!("{device} online={online}"),
            })
            .collect()
    }

    /// The body of a QoS 1 PUBLISH.
    fn qos1(topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
        [string(topic), id.to_be_bytes().to_vec(), payload.to_vec()].concat()
    }

    fn hello(device: &str, seq: u64) -> Vec<u8> {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let header = edge_protocol::envelope::Header {
            sender: device.into(),
            seq,
            sent_at: 0,
            kind: edge_protocol::envelope::Kind::Hello,
        };
        edge_protocol::envelope::seal(&key, header, &0u8)
    }

    #[tokio::test]
    async fn the_gate_speaks_mqtt_to_devices_itself() {
        let ready = Arc::new(AtomicBool::new(false));
        let hub = Arc::new(Hub::new(ready.clone(), Arc::default()));
        let (_, code) = connect(&hub, "dev-1", 30).await;
        assert_eq!(code, 3, "server unavailable before the fleet loop listens");
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        hub.attach(tx);
        ready.store(true, Ordering::Relaxed);

        let (mut d, code) = connect(&hub, "dev-1", 30).await;
        assert_eq!(code, 0);
        hub.publish_desired("dev-1", b"desired v1".to_vec());
        // SUBSCRIBE: SUBACK, then the desired state kept for it (retain flag set)
        d.send(
            0x82,
            [vec![0, 9], string(&topics::desired("dev-1")), vec![1]].concat(),
        )
        .await;
        let suback = d.next().await.unwrap();
        assert_eq!((suback.kind(), suback.body.clone()), (9, vec![0, 9, 1]));
        let retained = d.next().await.unwrap();
        assert_eq!(retained.first, 0x33);
        let p = parse_publish(&retained).unwrap();
        assert_eq!(p.topic, topics::desired("dev-1"));
        assert_eq!(p.payload, b"desired v1");
        // a later desired state is pushed live
        hub.publish_desired("dev-1", b"desired v2".to_vec());
        let live = d.next().await.unwrap();
        assert_eq!(live.first, 0x32);
        assert_eq!(parse_publish(&live).unwrap().payload, b"desired v2");
        d.send(0x40, live.body[live.body.len() - 12..][..2].to_vec())
            .await;

        // status: acknowledged at once; a message on `up`: only once the ingest committed it
        d.send(0x32, qos1(&topics::status("dev-1"), 1, b"online"))
            .await;
        assert_eq!(d.next().await.unwrap().body, vec![0, 1]);
        d.send(0x32, qos1(&topics::up("dev-1"), 2, &hello("dev-1", 5)))
            .await;
        assert!(
            d.quiet().await,
            "PUBACK held until the ingest commits seq 5"
        );
        assert_eq!(uplinks(&rx).len(), 2);
        // a desired state does not wait behind the held PUBACK; a later PUBACK does
        hub.publish_desired("dev-1", b"desired v3".to_vec());
        let live = d.next().await.unwrap();
        assert_eq!(parse_publish(&live).unwrap().payload, b"desired v3");
        d.send(0x32, qos1(&topics::status("dev-1"), 4, b"online"))
            .await;
        assert!(
            d.quiet().await,
            "the status PUBACK waits for the one before it"
        );
        uplinks(&rx);
        hub.acks.done([("dev-1", 5)]);
        let puback = d.next().await.unwrap();
        assert_eq!((puback.kind(), puback.body), (4, vec![0, 2]));
        let puback = d.next().await.unwrap();
        assert_eq!((puback.kind(), puback.body), (4, vec![0, 4]), "in order");
        // PINGREQ → PINGRESP
        d.send(0xc0, vec![]).await;
        assert_eq!(d.next().await.unwrap().kind(), 13);

        // a second connection takes over: the first is closed, without its will
        let (mut d2, code) = connect(&hub, "dev-1", 30).await;
        assert_eq!(code, 0);
        assert!(d.next().await.is_none(), "the first connection is closed");
        assert!(
            uplinks(&rx).is_empty(),
            "no will for a connection taken over"
        );
        // vanishing without DISCONNECT: the will
        drop(d2.io.shutdown().await);
        drop(d2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(uplinks(&rx), vec!["dev-1 online=false"]);
        assert_eq!(hub.connected(), 0);
        // DISCONNECT: no will
        let (mut d3, _) = connect(&hub, "dev-1", 30).await;
        d3.send(0xe0, vec![]).await;
        assert!(d3.next().await.is_none());
        assert!(uplinks(&rx).is_empty());
        // silent past 1.5 keep-alive periods: closed, the will published
        let (mut d4, _) = connect(&hub, "dev-1", 1).await;
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert!(d4.next().await.is_none());
        assert_eq!(uplinks(&rx), vec!["dev-1 online=false"]);
        // QoS 2 is refused by closing
        let (mut d5, _) = connect(&hub, "dev-1", 30).await;
        d5.send(0x34, qos1(&topics::up("dev-1"), 3, b"x")).await;
        assert!(d5.next().await.is_none());
    }

    /// A listening hub whose ingest queue holds one message and is drained only by the test:
    /// the ingest is behind.
    fn hub_behind() -> (Arc<Hub>, std::sync::mpsc::Receiver<Uplink>) {
        let hub = Arc::new(Hub::new(Arc::new(AtomicBool::new(true)), Arc::default()));
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        hub.attach(tx);
        (hub, rx)
    }

    #[tokio::test]
    async fn a_connection_taken_over_closes_while_the_ingest_queue_is_full() {
        let (hub, rx) = hub_behind();
        let (mut d, code, first) = connect_task(&hub, "dev-1", 30).await;
        assert_eq!(code, 0);
        d.send(0x32, qos1(&topics::up("dev-1"), 1, &hello("dev-1", 1)))
            .await;
        d.send(0x32, qos1(&topics::up("dev-1"), 2, &hello("dev-1", 2)))
            .await;
        // the second message waits for room in the queue; the device connects again
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_d2, code) = connect(&hub, "dev-1", 30).await;
        assert_eq!(code, 0);
        // the first connection's task ends (its descriptor goes), the queue still full
        let ended = tokio::time::timeout(Duration::from_secs(3), first).await;
        assert!(
            ended.is_ok(),
            "the connection taken over is closed at once, not held by the full queue"
        );
        assert_eq!(
            uplinks(&rx).len(),
            1,
            "only the first message reached the queue"
        );
    }

    #[tokio::test]
    async fn pings_are_answered_while_the_ingest_queue_is_full() {
        let (hub, rx) = hub_behind();
        let (mut d, code) = connect(&hub, "dev-1", 30).await;
        assert_eq!(code, 0);
        let status = |id| qos1(&topics::status("dev-1"), id, b"online");
        d.send(0x32, status(1)).await;
        assert_eq!(
            d.next().await.unwrap().body,
            vec![0, 1],
            "in the queue: PUBACK"
        );
        // the queue is full: the next publish waits, the ping behind it is answered
        d.send(0x32, status(2)).await;
        d.send(0xc0, vec![]).await;
        let pong = d.next().await.unwrap();
        assert_eq!(
            pong.kind(),
            13,
            "PINGRESP while a publish waits for the ingest"
        );
        // the ingest catches up: the waiting publish is handed over and acknowledged
        assert_eq!(uplinks(&rx).len(), 1);
        assert_eq!(d.next().await.unwrap().body, vec![0, 2]);
        assert_eq!(uplinks(&rx), vec!["dev-1 online=true"]);
        // past the read-ahead bound the gate stops reading: the ping behind goes unanswered
        let last = 3 + PENDING_PUBLISHES as u16 + 1;
        for id in 3..=last {
            d.send(0x32, status(id)).await;
        }
        d.send(0xc0, vec![]).await;
        assert_eq!(
            d.next().await.unwrap().body,
            vec![0, 3],
            "the one the queue took"
        );
        assert!(d.quiet().await, "no PINGRESP past the read-ahead bound");
        // the queue drains: everything is handed over in order, then the ping answered
        let mut seen = Vec::new();
        for _ in 0..400 {
            seen.extend(uplinks(&rx));
            if seen.len() == PENDING_PUBLISHES + 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await; // the gate's turn
        }
        assert_eq!(
            seen.len(),
            PENDING_PUBLISHES + 2,
            "all handed over: {seen:?}"
        );
        // the PUBACKs in order; the ping is answered once read (PINGRESP may pass PUBACKs)
        let (mut acks, mut pongs) = (Vec::new(), 0);
        for _ in 4..=last + 1 {
            let p = d.next().await.unwrap();
            match p.kind() {
                4 => acks.push(u16::from_be_bytes([p.body[0], p.body[1]])),
                13 => pongs += 1,
                other => panic!("unexpected packet type {other}"),
            }
        }
        assert_eq!(acks, (4..=last).collect::<Vec<_>>());
        assert_eq!(pongs, 1);
    }
}
