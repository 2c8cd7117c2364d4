//! TLS to the fleet server (rustls, ring provider): the fleet CA from `server.ca` pinned for
//! HTTPS (ureq) and MQTT over TLS (rumqttc), or the public web PKI roots without it.

use std::path::Path;

/// Reads a PEM file holding at least one certificate.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("server.ca {}: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "server.ca {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(pem)
}

#[cfg(feature = "tls")]
mod enabled {
    use std::sync::Arc;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    fn roots(ca_pem: Option<&[u8]>) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        match ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                    if let Err(e) = roots.add(cert) {
                        tracing::error!(error = %e, "fleet CA certificate refused");
                    }
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        roots
    }

    /// ureq's TLS settings.
    pub fn http(ca_pem: Option<&[u8]>) -> ureq::tls::TlsConfig {
        let mut builder = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(pem) = ca_pem {
            let certs: Vec<ureq::tls::Certificate<'static>> = CertificateDer::pem_slice_iter(pem)
                .flatten()
                .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            builder = builder.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        builder.build()
    }

    /// rumqttc's transport.
    pub fn mqtt(ca_pem: Option<&[u8]>) -> Result<rumqttc::Transport, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(ca_pem))
            .with_no_client_auth();
        Ok(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
        ))
    }
}

#[cfg(feature = "tls")]
pub use enabled::{http, mqtt};
