//! MQTT topic names. One place, so agent, server and tests cannot drift apart.
//!
//! - `edgefleet/v1/devices/{id}/desired`: server → device, [`crate::DesiredState`] (retained).
//! - `edgefleet/v1/devices/{id}/up`: device → server, hello / events / telemetry envelopes.
//! - `edgefleet/v1/devices/{id}/status`: `online` / `offline` (the MQTT will), unsigned, a hint.

/// Topic prefix (includes the protocol major version).
pub const PREFIX: &str = "edgefleet/v1/devices";

/// Why a device id is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("device id '{0}' is invalid: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
pub struct BadDeviceId(pub String);

/// Checks a device id: it is embedded in topics, paths and file names, so it may not contain
/// MQTT wildcards, separators or anything else surprising.
pub fn validate_device_id(id: &str) -> Result<(), BadDeviceId> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BadDeviceId(id.to_string()))
    }
}

/// The desired-state topic of a device.
pub fn desired(device_id: &str) -> String {
    format!("{PREFIX}/{device_id}/desired")
}

/// The device-to-server topic of a device.
pub fn up(device_id: &str) -> String {
    format!("{PREFIX}/{device_id}/up")
}

/// The online/offline status topic of a device.
pub fn status(device_id: &str) -> String {
    format!("{PREFIX}/{device_id}/status")
}

/// The server's subscription for every device's uplink.
pub const ALL_UP: &str = "edgefleet/v1/devices/+/up";

/// The server's subscription for every device's online/offline status.
pub const ALL_STATUS: &str = "edgefleet/v1/devices/+/status";

/// The device id in an uplink topic, if the topic is one.
pub fn device_of_up_topic(topic: &str) -> Option<&str> {
    device_of(topic, "/up")
}

/// The device id in a status topic, if the topic is one.
pub fn device_of_status_topic(topic: &str) -> Option<&str> {
    device_of(topic, "/status")
}

fn device_of<'t>(topic: &'t str, suffix: &str) -> Option<&'t str> {
    let id = topic
        .strip_prefix(PREFIX)?
        .strip_prefix('/')?
        .strip_suffix(suffix)?;
    validate_device_id(id).ok().map(|_| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_that_would_break_topics_or_paths_are_refused() {
        for bad in ["", "a/b", "+", "#", "..", "a b", "ü", &"x".repeat(65)] {
            assert!(validate_device_id(bad).is_err(), "{bad:?}");
        }
        for good in ["dev-001", "gw_7.lab", &"x".repeat(64)] {
            assert!(validate_device_id(good).is_ok(), "{good:?}");
        }
        assert_eq!(device_of_up_topic(&up("dev-1")), Some("dev-1"));
        assert_eq!(device_of_up_topic("edgefleet/v1/devices/a/b/up"), None);
        assert_eq!(device_of_up_topic(&desired("dev-1")), None);
        assert_eq!(device_of_status_topic(&status("dev-1")), Some("dev-1"));
        assert_eq!(device_of_status_topic(&up("dev-1")), None);
    }
}
