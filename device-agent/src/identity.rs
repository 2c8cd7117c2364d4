//! Who this device is: its id, its ed25519 key (created at first start, mode 0600, never leaves
//! the device) and its enrollment with the OTA server (token + public key + tags over HTTP, the
//! answer persisted so enrollment happens once).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer;
use edge_protocol::enroll::{proof_message, EnrollRequest, EnrollResponse, ENROLL_PATH};
use edge_protocol::topics::validate_device_id;
use edge_runtime::{keys, SigningKey};

use crate::config::{Config, ServerConfig};

/// File name of the device key inside `state_dir`.
pub const KEY_FILE: &str = "device.key";
/// File name of the persisted enrollment inside `state_dir`.
pub const ENROLLMENT_FILE: &str = "enrollment.json";

/// Identity failures.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key file exists but is not a key, or is readable by others.
    #[error("device key {path}: {reason}")]
    BadKey {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No usable device id.
    #[error("device id: {0}")]
    DeviceId(String),
    /// The server refused or could not be reached.
    #[error("enrollment with {url} failed: {reason}")]
    Enrollment {
        /// Server.
        url: String,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The device id: from the config, else `dev-` and the first 12 hex digits of
/// `/etc/machine-id`.
pub fn device_id(config: &Config) -> Result<String, IdentityError> {
    let id = match &config.device_id {
        Some(id) => id.clone(),
        None => {
            let raw = fs::read_to_string("/etc/machine-id").map_err(|e| {
                IdentityError::DeviceId(format!(
                    "no device_id in the config and /etc/machine-id is unreadable ({e}); set device_id"
                ))
            })?;
            let hex: String = raw.trim().chars().take(12).collect();
            format!("dev-{hex}")
        }
    };
    validate_device_id(&id).map_err(|e| IdentityError::DeviceId(e.to_string()))?;
    Ok(id)
}

/// Loads the device key from `state_dir`, creating it (mode 0600, written atomically) at first
/// start. A key file readable by group or others is refused.
pub fn device_key(state_dir: &Path) -> Result<SigningKey, IdentityError> {
    let path = state_dir.join(KEY_FILE);
    if path.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).map_err(io(&path))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(IdentityError::BadKey {
                    path,
                    reason: format!("mode {:o} lets others read it; chmod 600 it", mode & 0o777),
                });
            }
        }
        return keys::read_secret_key(&path).map_err(|e| IdentityError::BadKey {
            path: path.clone(),
            reason: e.to_string(),
        });
    }
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let key = keys::generate().map_err(|e| IdentityError::BadKey {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let tmp = state_dir.join(format!("{KEY_FILE}.tmp"));
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(io(&tmp))?;
        f.write_all(keys::secret_key_text(&key).as_bytes())
            .map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fs::File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(state_dir))?;
    Ok(key)
}

/// The persisted enrollment, if any.
pub fn enrollment(state_dir: &Path) -> Option<EnrollResponse> {
    let text = fs::read_to_string(state_dir.join(ENROLLMENT_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Enrolls with the server unless already enrolled; persists the answer.
pub fn enroll(
    state_dir: &Path,
    server: &ServerConfig,
    device_id: &str,
    key: &SigningKey,
    agent: &ureq::Agent,
) -> Result<EnrollResponse, IdentityError> {
    if let Some(done) = enrollment(state_dir) {
        if done.device_id == device_id {
            return Ok(done);
        }
    }
    let url = format!("{}{ENROLL_PATH}", server.url.trim_end_matches('/'));
    let fail = |reason: String| IdentityError::Enrollment {
        url: url.clone(),
        reason,
    };
    let token = server.enrollment_token.clone().unwrap_or_default();
    let public = key.verifying_key().to_bytes();
    let proof = key.sign(&proof_message(device_id, &public, &token));
    let request = EnrollRequest {
        device_id: device_id.to_string(),
        public_key: hex::encode(public),
        token,
        tags: server.tags.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        proof: hex::encode(proof.to_bytes()),
    };
    let body = serde_json::to_vec(&request).expect("serializable");
    let mut response = agent
        .post(&url)
        .header("content-type", "application/json")
        .send(&body[..])
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}: {}", text.trim())));
    }
    let answer: EnrollResponse =
        serde_json::from_str(&text).map_err(|e| fail(format!("bad answer: {e}")))?;
    if answer.device_id != device_id {
        return Err(fail(format!(
            "server registered '{}' instead of '{device_id}'",
            answer.device_id
        )));
    }
    let path = state_dir.join(ENROLLMENT_FILE);
    let tmp = state_dir.join(format!("{ENROLLMENT_FILE}.tmp"));
    {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&serde_json::to_vec_pretty(&answer).expect("serializable"))
            .map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = device_key(dir.path()).unwrap();
        let k2 = device_key(dir.path()).unwrap();
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.path().join(KEY_FILE);
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
            let e = device_key(dir.path()).unwrap_err();
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
    }
}
