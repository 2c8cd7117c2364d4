//! The signed envelope every MQTT payload travels in (DESIGN decision 2: the broker is untrusted
//! transport). A payload is CBOR:
//!
//! ```text
//! envelope = [version: 1, sender: text, signed: bytes, signature: bytes(64)]
//! signed   = [header: [sender, seq, sent_at, kind], body: bytes]   (CBOR of the message)
//! signature = ed25519 over "edgefleet message v1\0" || signed
//! ```
//!
//! The outer `sender` only says which key to try; after the signature verifies, the signed
//! header's sender must equal it. Nothing inside `signed` is decoded before the signature
//! checks out. [`ReplayGuard`] then drops anything whose per-sender sequence number is not newer
//! than the last accepted one.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use minicbor::bytes::{ByteArray, ByteVec};
use minicbor::{Decode, Encode};

/// Domain-separation prefix: a message signature can never pass for a bundle or trust signature.
pub const MESSAGE_DOMAIN: &[u8] = b"edgefleet message v1\0";
/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
/// Largest envelope accepted (telemetry batches stay well below).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What a message is; part of the signed header, so a signed event cannot be replayed as a
/// desired state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
#[cbor(index_only)]
pub enum Kind {
    /// Server → device: the device's desired state.
    #[n(0)]
    Desired,
    /// Device → server: hello with the reported state.
    #[n(1)]
    Hello,
    /// Device → server: reconcile events.
    #[n(2)]
    Events,
    /// Device → server: telemetry windows.
    #[n(3)]
    Telemetry,
}

/// The signed header of a message.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Header {
    /// Sender id: a device id, or `director` for the server's director key.
    #[n(0)]
    pub sender: String,
    /// Per-sender sequence number, strictly increasing.
    #[n(1)]
    pub seq: u64,
    /// Send time, unix seconds (informational; ordering is by `seq`).
    #[n(2)]
    pub sent_at: u64,
    /// Message kind.
    #[n(3)]
    pub kind: Kind,
}

#[derive(Encode, Decode)]
struct Signed {
    #[n(0)]
    header: Header,
    #[n(1)]
    body: ByteVec,
}

#[derive(Encode, Decode)]
struct Envelope {
    #[n(0)]
    version: u8,
    #[n(1)]
    sender: String,
    #[n(2)]
    signed: ByteVec,
    #[n(3)]
    signature: ByteArray<64>,
}

/// Why a message was dropped.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("message is {0} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a decodable envelope or body.
    #[error("message is malformed: {0}")]
    Malformed(String),
    /// Envelope version not understood.
    #[error("message envelope version {0} is not supported")]
    UnsupportedVersion(u8),
    /// No key known for the sender.
    #[error("message from unknown sender '{0}'")]
    UnknownSender(String),
    /// Signature does not verify.
    #[error("message from '{0}' has a bad signature")]
    BadSignature(String),
    /// Outer and signed sender differ.
    #[error("message claims sender '{outer}' but was signed as '{signed}'")]
    SenderMismatch {
        /// Outer sender.
        outer: String,
        /// Signed sender.
        signed: String,
    },
    /// A different kind of message than the topic carries.
    #[error("expected a {expected:?} message, got {got:?}")]
    WrongKind {
        /// Expected kind.
        expected: Kind,
        /// Kind received.
        got: Kind,
    },
    /// Sequence number not newer than the last accepted one.
    #[error("replayed or stale message from '{sender}': seq {seq}, last accepted {last}")]
    Replay {
        /// Sender.
        sender: String,
        /// Sequence number received.
        seq: u64,
        /// Last accepted.
        last: u64,
    },
}

/// Signs `body` under `header` with `key`.
pub fn seal<T: Encode<()>>(key: &SigningKey, header: Header, body: &T) -> Vec<u8> {
    let body = minicbor::to_vec(body).expect("encoding into a Vec cannot fail");
    let sender = header.sender.clone();
    let signed = minicbor::to_vec(Signed {
        header,
        body: ByteVec::from(body),
    })
    .expect("encoding into a Vec cannot fail");
    let signature = key.sign(&[MESSAGE_DOMAIN, &signed].concat()).to_bytes();
    minicbor::to_vec(Envelope {
        version: ENVELOPE_VERSION,
        sender,
        signed: ByteVec::from(signed),
        signature: ByteArray::from(signature),
    })
    .expect("encoding into a Vec cannot fail")
}

/// Verifies a message with the key `key_for` returns for its sender, checks its kind, and decodes
/// its body. Replay protection is the caller's next step ([`ReplayGuard::accept`]).
pub fn open<T>(
    bytes: &[u8],
    expected: Kind,
    key_for: impl FnOnce(&str) -> Option<VerifyingKey>,
) -> Result<(Header, T), EnvelopeError>
where
    T: for<'b> Decode<'b, ()>,
{
    let (header, body) = open_raw(bytes, key_for)?;
    if header.kind != expected {
        return Err(EnvelopeError::WrongKind {
            expected,
            got: header.kind,
        });
    }
    Ok((header, decode_body(&body)?))
}

/// Decodes the body of a message opened with [`open_raw`].
pub fn decode_body<T>(body: &[u8]) -> Result<T, EnvelopeError>
where
    T: for<'b> Decode<'b, ()>,
{
    minicbor::decode(body).map_err(|e| EnvelopeError::Malformed(format!("body: {e}")))
}

/// Verifies a message of any kind and returns its authenticated header and undecoded body: for
/// a receiver whose topic carries several kinds (the server's uplink), which picks the body type
/// by `header.kind` and decodes it with [`decode_body`].
pub fn open_raw(
    bytes: &[u8],
    key_for: impl FnOnce(&str) -> Option<VerifyingKey>,
) -> Result<(Header, Vec<u8>), EnvelopeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(EnvelopeError::TooLarge(bytes.len()));
    }
    let env: Envelope =
        minicbor::decode(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if env.version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(env.version));
    }
    let key =
        key_for(&env.sender).ok_or_else(|| EnvelopeError::UnknownSender(env.sender.clone()))?;
    let message = [MESSAGE_DOMAIN, &env.signed].concat();
    key.verify_strict(&message, &Signature::from_bytes(&env.signature))
        .map_err(|_| EnvelopeError::BadSignature(env.sender.clone()))?;
    // authenticated from here on
    let signed: Signed =
        minicbor::decode(&env.signed).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if signed.header.sender != env.sender {
        return Err(EnvelopeError::SenderMismatch {
            outer: env.sender,
            signed: signed.header.sender,
        });
    }
    Ok((signed.header, signed.body.into()))
}

/// The sequence number a message claims, read **without verifying it**: only for flow control
/// that a forged number can hurt no one but its sender (the server's gate holds a device's
/// PUBACK until the message of that number has been ingested). `None` if it does not decode.
pub fn unverified_seq(bytes: &[u8]) -> Option<u64> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let env: Envelope = minicbor::decode(bytes).ok()?;
    let signed: Signed = minicbor::decode(&env.signed).ok()?;
    Some(signed.header.seq)
}

/// Last accepted sequence number per sender: accepts only strictly newer messages. Receivers
/// persist [`ReplayGuard::last`] so a restart does not reopen the window.
#[derive(Clone, Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<String, u64>,
}

impl ReplayGuard {
    /// Accepts `header` if its sequence number is newer than the sender's last; records it.
    pub fn accept(&mut self, header: &Header) -> Result<(), EnvelopeError> {
        match self.last.get(&header.sender) {
            Some(&last) if header.seq <= last => Err(EnvelopeError::Replay {
                sender: header.sender.clone(),
                seq: header.seq,
                last,
            }),
            _ => {
                self.last.insert(header.sender.clone(), header.seq);
                Ok(())
            }
        }
    }

    /// Restores a persisted high-water mark.
    pub fn restore(&mut self, sender: &str, seq: u64) {
        let e = self.last.entry(sender.to_string()).or_insert(seq);
        *e = (*e).max(seq);
    }

    /// The sender's last accepted sequence number.
    pub fn last(&self, sender: &str) -> Option<u64> {
        self.last.get(sender).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A validly signed message relabelled with another sender on the outside: the key lookup
    /// goes by the outer name, so this is what a device that holds its own key and tries to speak
    /// for another would produce.
    #[test]
    fn outer_and_signed_sender_must_agree() {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let header = Header {
            sender: "dev-a".into(),
            seq: 1,
            sent_at: 0,
            kind: Kind::Hello,
        };
        let signed = minicbor::to_vec(Signed {
            header,
            body: ByteVec::from(minicbor::to_vec(0u8).unwrap()),
        })
        .unwrap();
        let signature = key.sign(&[MESSAGE_DOMAIN, &signed].concat()).to_bytes();
        let env = minicbor::to_vec(Envelope {
            version: ENVELOPE_VERSION,
            sender: "dev-b".into(),
            signed: ByteVec::from(signed),
            signature: ByteArray::from(signature),
        })
        .unwrap();
        let err = open::<u8>(&env, Kind::Hello, |_| Some(key.verifying_key())).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::SenderMismatch {
                outer: "dev-b".into(),
                signed: "dev-a".into()
            }
        );
    }
}
