//! One HTTP call at a time, as the fleet's tools make them: the fleet CA trusted (or plain
//! HTTP), headers as given (a bearer token: [`bearer`]), statuses as values (a 4xx is an answer,
//! not an error), bodies up to 64 MiB, 30 s at most.

use std::time::Duration;

/// An HTTP client, trusting `ca` (PEM) in addition to nothing else when given.
pub fn client(ca: Option<&[u8]>) -> ureq::Agent {
    let mut builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)));
    if let Some(pem) = ca {
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                _ => None,
            })
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        builder = builder.tls_config(tls);
    }
    builder.build().into()
}

/// The `authorization` header of a bearer token.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// One call: `(status, body text)`; a connection that fails is status 0 with the error as text.
pub fn call(
    client: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> (u16, String) {
    let result = if method == "GET" {
        let mut r = client.get(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.call()
    } else {
        let mut r = client.post(url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        match body {
            Some((ct, bytes)) => r.header("content-type", ct).send(&bytes[..]),
            None => r.send_empty(),
        }
    };
    match result {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .unwrap_or_default();
            (status, text)
        }
        Err(e) => (0, e.to_string()),
    }
}

/// A GET over plain HTTP (an agent's local API).
pub fn get(url: &str) -> (u16, String) {
    call(&client(None), "GET", url, &[], None)
}

/// A POST over plain HTTP (an agent's local API), with `headers`.
pub fn post(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    call(
        &client(None),
        "POST",
        url,
        headers,
        Some((content_type, body)),
    )
}
