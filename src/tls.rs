//! TLS termination: PEM (or self-signed) certificates → rustls ServerConfig with ALPN h2 and
//! http/1.1, behind a resolver whose certificate can be swapped on reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert {}: {source}", path.display())]
    Cert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls.cert {}: no certificate found", .0.display())]
    NoCert(PathBuf),
    #[error("tls.key {}: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls: {} and {}: {source}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("tls.self_signed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("tls.self_signed: {0}")]
    SelfSigned(#[source] rustls::Error),
}

/// Installs the ring crypto provider for the process (idempotent). Call before building any
/// rustls config or reqwest client.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificate in use; replaced atomically on reload.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertResolver {
    /// Re-reads the certificate; on error the old one stays in use.
    pub fn reload(&self, tls: &TlsConfig) -> Result<(), TlsError> {
        let key = load(tls)?;
        self.current.store(Arc::new(key));
        Ok(())
    }
}

/// A loaded TLS setup: the acceptor config and its resolver (for reload).
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    pub resolver: Arc<CertResolver>,
}

pub fn build(tls: &TlsConfig) -> Result<Tls, TlsError> {
    install_provider();
    let key = load(tls)?;
    let resolver = Arc::new(CertResolver {
        current: ArcSwap::from_pointee(key),
    });
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(8192);
    Ok(Tls {
        config: Arc::new(config),
        resolver,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn load(tls: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    match tls {
        TlsConfig::Pem { cert, key } => {
            let chain = read_certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
                path: key.clone(),
                source,
            })?;
            CertifiedKey::from_der(chain, key_der, &provider()).map_err(|source| TlsError::Pair {
                cert: cert.clone(),
                key: key.clone(),
                source,
            })
        }
        TlsConfig::SelfSigned { names } => {
            let generated = rcgen::generate_simple_self_signed(names.clone())?;
            let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            CertifiedKey::from_der(vec![generated.cert.der().clone()], key_der, &provider())
                .map_err(TlsError::SelfSigned)
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |source| TlsError::Cert {
        path: path.to_owned(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(bad)?
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_owned()));
    }
    Ok(certs)
}

/// The negotiated TLS version, as a metric label.
pub fn version_label(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    }
}
