//! TLS by rustls: the serving certificate is resolved per handshake from an
//! `ArcSwap`, and a poller swaps in a new pair when the files change, so a
//! rotation (cert-manager, a Secret update) never drops a connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

fn invalid(what: impl Into<String>, message: impl ToString) -> TlsError {
    TlsError::Invalid {
        what: what.into(),
        message: message.to_string(),
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate and key, swapped atomically on rotation.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    files: Option<(PathBuf, PathBuf)>,
    /// The file contents last loaded, to notice a change.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl CertStore {
    /// From PEM texts (the development certificate, made in memory).
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Arc<Self>, TlsError> {
        let pair = certified_key(cert, key, "the certificate")?;
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(pair),
            files: None,
            loaded: Mutex::new((cert.to_vec(), key.to_vec())),
        }))
    }

    /// From PEM files, which [`CertStore::reload`] reads again.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let pair = certified_key(&cert_pem, &key_pem, &cert.display().to_string())?;
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(pair),
            files: Some((cert.to_path_buf(), key.to_path_buf())),
            loaded: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// Reads the files again; swaps in the new pair when they changed and
    /// form a valid pair. `Ok(false)`: nothing new. An error keeps the pair
    /// in use (a rotation caught half-written is picked up next time).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some((cert, key)) = &self.files else {
            return Ok(false);
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        let pair = certified_key(&cert_pem, &key_pem, &cert.display().to_string())?;
        self.current.store(Arc::new(pair));
        *loaded = (cert_pem, key_pem);
        Ok(true)
    }

    /// Polls the files until the process ends. A failed reload (say, a
    /// broken pair) calls `on_failure` each time and is logged when its
    /// error first appears, not every poll.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        on_change: impl Fn(&CertStore) + Send,
        on_failure: impl Fn() + Send,
    ) {
        let mut last_error = None;
        loop {
            tokio::time::sleep(every).await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(not_after = %expiry(self.not_after()), "serving certificate reloaded");
                    on_change(&self);
                    last_error = None;
                }
                Ok(false) => {}
                Err(e) => {
                    on_failure();
                    let error = e.to_string();
                    if last_error.as_ref() != Some(&error) {
                        tracing::warn!(%error, "serving certificate not reloaded; keeping the current one");
                        last_error = Some(error);
                    }
                }
            }
        }
    }

    /// When the serving certificate expires, in Unix seconds (the metric).
    pub fn not_after(&self) -> Option<i64> {
        let pair = self.current.load();
        let der = pair.cert.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(cert.validity().not_after.timestamp())
    }
}

/// An expiry for people to read: RFC 3339, or `unknown`.
pub fn expiry(not_after: Option<i64>) -> String {
    not_after
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| "unknown".into(), |t| t.to_string())
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, e))?;
    if certs.is_empty() {
        return Err(invalid(what, "no PEM certificate found"));
    }
    Ok(certs)
}

fn certified_key(cert: &[u8], key: &[u8], what: &str) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert, what)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid(format!("{what} key"), e))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| invalid(what, e))
}

/// TLS 1.2 and 1.3, ALPN h2 and http/1.1 (the API server speaks HTTP/2 to
/// webhooks); with `client_ca`, only clients holding a certificate from it.
pub fn server_config(
    certs: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid("TLS versions", e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(&read(path)?, &path.display().to_string())? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(path.display().to_string(), e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| invalid(path.display().to_string(), e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
