//! The signed envelope: round trip, golden bytes, every tampered byte refused, kind confusion,
//! unknown senders, replays.

use ed25519_dalek::SigningKey;
use edge_protocol::{
    open, seal, DesiredModel, DesiredState, EnvelopeError, Event, Events, Header, Kind,
    ReplayGuard, Step,
};

fn director() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn desired(generation: u64) -> DesiredState {
    DesiredState {
        device_id: "dev-001".into(),
        generation,
        models: vec![DesiredModel {
            name: "digits".into(),
            version: "2.0.0".into(),
            bundle_sha256: [0xab; 32].into(),
            size: 84_228,
        }],
        shadows: vec![],
    }
}

fn header(seq: u64, kind: Kind) -> Header {
    Header {
        sender: "director".into(),
        seq,
        sent_at: 1_800_000_000,
        kind,
    }
}

fn key_for(name: &str) -> Option<ed25519_dalek::VerifyingKey> {
    (name == "director").then(|| director().verifying_key())
}

#[test]
fn round_trip() {
    let bytes = seal(&director(), header(1, Kind::Desired), &desired(5));
    let (h, d): (Header, DesiredState) = open(&bytes, Kind::Desired, key_for).unwrap();
    assert_eq!(h, header(1, Kind::Desired));
    assert_eq!(d, desired(5));
}

/// Golden vector: these exact bytes are the v1 wire format. If this test fails, the format
/// changed: that needs a new envelope version, not a new expected string.
#[test]
fn golden_desired_state_envelope() {
    let bytes = seal(&director(), header(1, Kind::Desired), &desired(5));
    assert_eq!(hex::encode(&bytes), GOLDEN);
    let (_, d): (Header, DesiredState) =
        open(&hex::decode(GOLDEN).unwrap(), Kind::Desired, key_for).unwrap();
    assert_eq!(d.generation, 5);
}

const GOLDEN: &str = "8401686469726563746f7258548284686469726563746f72011a6b49d20000584083676465762d3030310581846664696769747365322e302e305820abababababababababababababababababababababababababababababababab1a00014904584066cb9dc61e71957a16aa8047622b30b63b2ca1eddd48bda8f5097e72ec371a972d515a46da55a87b8b15a0fa7fd1f21ab00a718d91284c0bdafbb9bca7ced609";

#[test]
fn every_flipped_byte_is_refused() {
    let bytes = seal(&director(), header(1, Kind::Desired), &desired(5));
    for at in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[at] ^= mask;
            let r: Result<(Header, DesiredState), _> = open(&b, Kind::Desired, key_for);
            assert!(r.is_err(), "flip {mask:#x} at {at} accepted");
        }
    }
    for cut in 0..bytes.len() {
        assert!(open::<DesiredState>(&bytes[..cut], Kind::Desired, key_for).is_err());
    }
}

#[test]
fn kinds_senders_sizes() {
    // a signed event is not a desired state
    let events = Events {
        events: vec![Event {
            at: 1,
            generation: 5,
            model: "digits".into(),
            version: "2.0.0".into(),
            step: Step::Committed,
            detail: None,
        }],
    };
    let bytes = seal(&director(), header(2, Kind::Events), &events);
    assert_eq!(
        open::<DesiredState>(&bytes, Kind::Desired, key_for).unwrap_err(),
        EnvelopeError::WrongKind {
            expected: Kind::Desired,
            got: Kind::Events
        }
    );
    assert_eq!(
        open::<Events>(&bytes, Kind::Events, key_for).unwrap().1,
        events
    );

    // signed by a key that is not the sender's
    let forger = SigningKey::from_bytes(&[9u8; 32]);
    let forged = seal(&forger, header(3, Kind::Desired), &desired(6));
    assert_eq!(
        open::<DesiredState>(&forged, Kind::Desired, key_for).unwrap_err(),
        EnvelopeError::BadSignature("director".into())
    );

    // an unknown sender
    let mut h = header(1, Kind::Desired);
    h.sender = "mallory".into();
    let unknown = seal(&forger, h, &desired(6));
    assert_eq!(
        open::<DesiredState>(&unknown, Kind::Desired, key_for).unwrap_err(),
        EnvelopeError::UnknownSender("mallory".into())
    );

    // oversized
    let huge = vec![0u8; edge_protocol::envelope::MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        open::<DesiredState>(&huge, Kind::Desired, key_for),
        Err(EnvelopeError::TooLarge(_))
    ));
    assert!(matches!(
        open::<DesiredState>(b"\xa1garbage", Kind::Desired, key_for),
        Err(EnvelopeError::Malformed(_))
    ));
}

#[test]
fn replays_and_stale_messages_are_dropped() {
    let mut guard = ReplayGuard::default();
    assert!(guard.accept(&header(1, Kind::Desired)).is_ok());
    assert!(guard.accept(&header(3, Kind::Desired)).is_ok());
    assert_eq!(
        guard.accept(&header(3, Kind::Desired)),
        Err(EnvelopeError::Replay {
            sender: "director".into(),
            seq: 3,
            last: 3
        })
    );
    assert!(
        guard.accept(&header(2, Kind::Desired)).is_err(),
        "older than the last accepted"
    );
    // senders are independent
    let mut other = header(1, Kind::Hello);
    other.sender = "dev-001".into();
    assert!(guard.accept(&other).is_ok());
    // a restored high-water mark survives a restart
    let mut restarted = ReplayGuard::default();
    restarted.restore("director", guard.last("director").unwrap());
    assert!(restarted.accept(&header(3, Kind::Desired)).is_err());
    assert!(restarted.accept(&header(4, Kind::Desired)).is_ok());
}

/// A desired state with a shadow round-trips, and one without keeps the bytes it always had (the
/// field is left out, so agents that predate shadows read today's desired states).
#[test]
fn shadows_are_an_optional_trailing_field() {
    let plain = minicbor::to_vec(desired(3)).unwrap();
    let mut with = desired(3);
    with.shadows.push(edge_protocol::DesiredShadow {
        model: with.models[0].clone(),
        sample_ppm: 500_000,
        cpu_millicores: 250,
    });
    let bytes = minicbor::to_vec(&with).unwrap();
    assert!(bytes.len() > plain.len());
    let back: DesiredState = minicbor::decode(&bytes).unwrap();
    assert_eq!(back, with);
    let old: DesiredState = minicbor::decode(&plain).unwrap();
    assert!(old.shadows.is_empty());
}
