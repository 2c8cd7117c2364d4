//! The server's own end of its device connections (issue 26): which devices are connected to
//! this server now, the desired state each connection holds for its device, and the path from
//! a device's publishes to the ingest. The device gate ([`crate::gate`]) terminates MQTT and
//! talks to the hub in-process, so a connected device costs this process one descriptor (its
//! socket) and no broker: the embedded rumqttd it replaced cost three descriptors and ~100 KB a
//! device.
//!
//! - A desired state published here for a connected device is kept with its connection and
//!   pushed at once if the device has subscribed, or when it subscribes. Kept and live messages
//!   go through one lock and one queue per connection, so a device never gets an older desired
//!   state after a newer one.
//! - Nothing is kept for devices connected elsewhere: the fleet loop signs and publishes only
//!   for devices this hub [`holds`](Hub::holds) (with replicas, each signs for its own devices,
//!   not the whole fleet). A device that connects says hello, and the hello is answered with its
//!   stored desired state ([`crate::fleet`]).
//! - A second connection under a device id takes over: the first is closed without its will.
//! - Device messages go to the ingest queue in the order they arrived; a full queue makes the
//!   connection stop reading (TCP backpressure slows the device, nothing is dropped).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::acks::IngestAcks;
use crate::ingest::Uplink;

/// What a connection's writer sends to its device, in order.
#[derive(Debug)]
pub enum Out {
    /// An encoded MQTT packet (CONNACK, SUBACK, UNSUBACK, PINGRESP).
    Packet(Vec<u8>),
    /// A signed desired state for the device's desired topic (QoS 1); `retained` when it is the
    /// retained one answering a SUBSCRIBE.
    Desired {
        /// The signed message.
        payload: Arc<[u8]>,
        /// Sent with the retain flag.
        retained: bool,
    },
    /// The PUBACK of the device's publish `id`, after the PUBACKs queued before it (MQTT keeps
    /// them in order); with `seq`, only once the ingest has committed that message. Desired
    /// states do not wait for it.
    Puback {
        /// Packet id.
        id: u16,
        /// The sequence number of the message on the device's `up` topic it acknowledges.
        seq: Option<u64>,
    },
    /// Close the connection (another connection took the device over).
    Close,
}

struct Session {
    id: u64,
    subscribed: bool,
    /// The latest desired state published for the device while this connection is up.
    retained: Option<Arc<[u8]>>,
    out: mpsc::UnboundedSender<Out>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
}

/// A connection's registration: its id in the hub and its outgoing queue.
pub struct Registration {
    /// Session id (a later connection of the same device gets another).
    pub session: u64,
    /// Queue to the connection's writer (the hub pushes desired states into it).
    pub out: mpsc::UnboundedSender<Out>,
    /// The writer's end.
    pub rx: mpsc::UnboundedReceiver<Out>,
}

/// The devices connected to this server and the desired states kept for them.
pub struct Hub {
    state: Mutex<State>,
    next_session: AtomicU64,
    uplink: OnceLock<std::sync::mpsc::SyncSender<Uplink>>,
    /// Set once the fleet loop listens: devices are admitted only then.
    ready: Arc<AtomicBool>,
    /// Committed messages (the gate holds PUBACKs on them).
    pub acks: Arc<IngestAcks>,
}

/// How long a connection waits between tries when the ingest queue is full.
pub const FULL_QUEUE_WAIT: Duration = Duration::from_millis(5);

impl Hub {
    /// A hub whose `ready` flag the fleet loop sets.
    pub fn new(ready: Arc<AtomicBool>, acks: Arc<IngestAcks>) -> Hub {
        Hub {
            state: Mutex::default(),
            next_session: AtomicU64::new(1),
            uplink: OnceLock::new(),
            ready,
            acks,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether devices are admitted (the fleet loop is listening).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.uplink.get().is_some()
    }

    /// Connects the ingest queue (once, by the fleet loop).
    pub fn attach(&self, uplink: std::sync::mpsc::SyncSender<Uplink>) {
        let _ = self.uplink.set(uplink);
    }

    /// Registers a new connection of `device`; an earlier one is told to close.
    pub fn connect(&self, device: &str) -> Registration {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (out, rx) = mpsc::unbounded_channel();
        let old = self.state().sessions.insert(
            device.to_string(),
            Session {
                id: session,
                subscribed: false,
                retained: None,
                out: out.clone(),
            },
        );
        if let Some(old) = old {
            tracing::info!(%device, "device connected again; its earlier connection is closed");
            let _ = old.out.send(Out::Close);
        }
        Registration { session, out, rx }
    }

    /// Ends connection `session` of `device`: whether it was the device's current one (false
    /// when another connection took over).
    pub fn disconnect(&self, device: &str, session: u64) -> bool {
        let mut state = self.state();
        if state.sessions.get(device).is_some_and(|s| s.id == session) {
            state.sessions.remove(device);
            true
        } else {
            false
        }
    }

    /// The device subscribed to its desired topic: the kept desired state, if any, is queued
    /// to it (after whatever the connection queued before, e.g. the SUBACK).
    pub fn subscribe(&self, device: &str, session: u64) {
        let mut state = self.state();
        if let Some(s) = state.sessions.get_mut(device).filter(|s| s.id == session) {
            s.subscribed = true;
            if let Some(payload) = s.retained.clone() {
                let _ = s.out.send(Out::Desired {
                    payload,
                    retained: true,
                });
            }
        }
    }

    /// The device unsubscribed from its desired topic.
    pub fn unsubscribe(&self, device: &str, session: u64) {
        if let Some(s) = self
            .state()
            .sessions
            .get_mut(device)
            .filter(|s| s.id == session)
        {
            s.subscribed = false;
        }
    }

    /// Keeps `payload` as `device`'s desired state if the device is connected here, and pushes
    /// it if the device has subscribed; for a device not connected here it is dropped.
    pub fn publish_desired(&self, device: &str, payload: Vec<u8>) {
        let mut state = self.state();
        if let Some(s) = state.sessions.get_mut(device) {
            let payload: Arc<[u8]> = payload.into();
            if s.subscribed {
                let _ = s.out.send(Out::Desired {
                    payload: payload.clone(),
                    retained: false,
                });
            }
            s.retained = Some(payload);
        }
    }

    /// Whether `device` is connected here (its desired states are worth signing here).
    pub fn holds(&self, device: &str) -> bool {
        self.state().sessions.contains_key(device)
    }

    /// Devices connected now.
    pub fn connected(&self) -> usize {
        self.state().sessions.len()
    }

    /// Hands a device message to the ingest if its queue has room: `Err(Some(message))` back
    /// when it is full, `Err(None)` when no fleet loop listens (the server is shutting down).
    pub fn try_uplink(&self, message: Uplink) -> Result<(), Option<Uplink>> {
        let Some(tx) = self.uplink.get() else {
            return Err(None);
        };
        match tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(m)) => Err(Some(m)),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(None),
        }
    }

    /// Hands a device message to the ingest, waiting while its queue is full; false if no
    /// fleet loop listens (the server is shutting down).
    pub async fn uplink(&self, mut message: Uplink) -> bool {
        loop {
            match self.try_uplink(message) {
                Ok(()) => return true,
                Err(Some(m)) => {
                    message = m;
                    tokio::time::sleep(FULL_QUEUE_WAIT).await;
                }
                Err(None) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(out: Out) -> (Vec<u8>, bool) {
        match out {
            Out::Desired { payload, retained } => (payload.to_vec(), retained),
            other => panic!("expected a desired state, got {other:?}"),
        }
    }

    #[test]
    fn kept_then_live_desired_states_in_order() {
        let hub = Hub::new(Arc::default(), Arc::default());
        hub.publish_desired("d1", b"v0".to_vec());
        assert!(!hub.holds("d1"), "not connected: nothing kept");
        let mut r = hub.connect("d1");
        assert!(hub.holds("d1"));
        hub.publish_desired("d1", b"v1".to_vec());
        hub.publish_desired("d1", b"v2".to_vec());
        assert!(r.rx.try_recv().is_err(), "nothing before SUBSCRIBE");
        hub.subscribe("d1", r.session);
        assert_eq!(desired(r.rx.try_recv().unwrap()), (b"v2".to_vec(), true));
        hub.publish_desired("d1", b"v3".to_vec());
        hub.publish_desired("d2", b"other".to_vec());
        assert_eq!(desired(r.rx.try_recv().unwrap()), (b"v3".to_vec(), false));
        assert!(
            r.rx.try_recv().is_err(),
            "another device's state is not sent"
        );
        hub.unsubscribe("d1", r.session);
        hub.publish_desired("d1", b"v4".to_vec());
        assert!(r.rx.try_recv().is_err(), "unsubscribed");
        assert!(hub.disconnect("d1", r.session));
        let r = hub.connect("d1");
        hub.subscribe("d1", r.session);
        let mut rx = r.rx;
        assert!(
            rx.try_recv().is_err(),
            "kept with the connection, not after it"
        );
    }

    #[test]
    fn a_second_connection_takes_the_device_over() {
        let hub = Hub::new(Arc::default(), Arc::default());
        let mut first = hub.connect("d1");
        let mut second = hub.connect("d1");
        assert!(matches!(first.rx.try_recv(), Ok(Out::Close)));
        hub.subscribe("d1", first.session);
        hub.publish_desired("d1", b"v1".to_vec());
        assert!(
            first.rx.try_recv().is_err(),
            "the old connection gets nothing"
        );
        assert!(second.rx.try_recv().is_err(), "not subscribed yet");
        assert!(
            !hub.disconnect("d1", first.session),
            "not the current connection"
        );
        assert_eq!(hub.connected(), 1);
        assert!(hub.disconnect("d1", second.session));
        assert_eq!(hub.connected(), 0);
    }

    #[tokio::test]
    async fn device_messages_wait_for_room_in_the_ingest_queue() {
        let hub = Arc::new(Hub::new(Arc::new(AtomicBool::new(true)), Arc::default()));
        assert!(!hub.ready(), "no fleet loop yet");
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        hub.attach(tx);
        assert!(hub.ready());
        let status = |online| Uplink::Status {
            device: "d1".into(),
            online,
        };
        assert!(hub.uplink(status(true)).await);
        let h = hub.clone();
        let second = tokio::spawn(async move { h.uplink(status(false)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!second.is_finished(), "the queue is full");
        assert!(matches!(rx.recv(), Ok(Uplink::Status { online: true, .. })));
        assert!(second.await.unwrap());
        assert!(matches!(
            rx.recv(),
            Ok(Uplink::Status { online: false, .. })
        ));
    }
}
