//! TLS for the server's HTTP and MQTT listeners (rustls, ring provider). `ota-server init`
//! creates a fleet CA and a server certificate signed by it (or copies in the operator's own
//! certificate and key); agents pin the CA (`server.ca` in their config). The HTTP listener does
//! each handshake in its own task, so a slow client cannot hold up the accept loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The TLS files in a data directory.
pub struct TlsFiles {
    /// The fleet CA certificate agents pin (absent when the operator brought their own).
    pub ca: PathBuf,
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files under `data/tls/`.
    pub fn in_data(data: &Path) -> TlsFiles {
        let dir = data.join("tls");
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Creates a fleet CA (ECDSA P-256, 10 years) and a server certificate for `names` (DNS names or
/// IP addresses, 2 years) in `data/tls/`. The CA key stays there (0600) to issue the next server
/// certificate; move it offline if the server machine is exposed.
pub fn create_fleet_ca(data: &Path, names: &[String]) -> Result<TlsFiles> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    if names.is_empty() {
        bail!("the server certificate needs at least one name (--tls-name)");
    }
    let files = TlsFiles::in_data(data);
    std::fs::create_dir_all(data.join("tls"))?;
    let now = time_now();
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "edgefleet fleet CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::from_secs(3600);
    ca.not_after = now + Duration::from_secs(10 * 365 * 86_400);
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut server = CertificateParams::new(names.to_vec())
        .with_context(|| format!("bad --tls-name in {names:?}"))?;
    server
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.not_before = now - Duration::from_secs(3600);
    server.not_after = now + Duration::from_secs(2 * 365 * 86_400);
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("signing the server certificate")?;

    std::fs::write(&files.ca, ca_cert.pem())?;
    write_private(&data.join("tls/ca.key"), &ca_key.serialize_pem())?;
    std::fs::write(
        &files.cert,
        format!("{}{}", server_cert.pem(), ca_cert.pem()),
    )?;
    write_private(&files.key, &server_key.serialize_pem())?;
    Ok(files)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Copies the operator's own certificate chain and key into `data/tls/` (checked to load).
pub fn import(data: &Path, cert: &Path, key: &Path) -> Result<TlsFiles> {
    let files = TlsFiles::in_data(data);
    std::fs::create_dir_all(data.join("tls"))?;
    std::fs::copy(cert, &files.cert).with_context(|| format!("cannot copy {}", cert.display()))?;
    let key_text =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    write_private(&files.key, &key_text)?;
    server_config(&files).context("the certificate and key given do not load")?;
    Ok(files)
}

/// The rustls server configuration from the files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: bad PEM", files.cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("{}: no private key", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// A TLS listener for `axum::serve`: accepts on TCP, handshakes in a task per connection (10 s
/// limit), hands over the connections that completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (socket, peer) = match tcp.accept().await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "https accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(v) => v,
            // the accept task never ends while the listener lives
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
