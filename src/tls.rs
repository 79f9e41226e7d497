//! TLS termination: PEM (or self-signed) certificates → rustls ServerConfig with ALPN h2 and
//! http/1.1, behind a resolver whose certificate can be swapped on reload.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

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
    pub fn reload(&self, tls: &TlsConfig) -> Result<(), String> {
        let (key, _) = load(tls)?;
        self.current.store(Arc::new(key));
        Ok(())
    }
}

/// A loaded TLS setup: the acceptor config, its resolver (for reload), and for self-signed
/// certificates the PEM of the certificate (so the demo can print where it is trusted).
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    pub resolver: Arc<CertResolver>,
    pub self_signed_pem: Option<String>,
}

pub fn build(tls: &TlsConfig) -> Result<Tls, String> {
    install_provider();
    let (key, self_signed_pem) = load(tls)?;
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
        self_signed_pem,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn load(tls: &TlsConfig) -> Result<(CertifiedKey, Option<String>), String> {
    match tls {
        TlsConfig::Pem { cert, key } => {
            let chain = read_certs(cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls.key {}: {e}", key.display()))?;
            let ck = CertifiedKey::from_der(chain, key_der, &provider())
                .map_err(|e| format!("tls: {} and {}: {e}", cert.display(), key.display()))?;
            Ok((ck, None))
        }
        TlsConfig::SelfSigned { names } => {
            let generated = rcgen::generate_simple_self_signed(names.clone())
                .map_err(|e| format!("tls.self_signed: {e}"))?;
            let pem = generated.cert.pem();
            let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            ));
            let ck =
                CertifiedKey::from_der(vec![generated.cert.der().clone()], key_der, &provider())
                    .map_err(|e| format!("tls.self_signed: {e}"))?;
            Ok((ck, Some(pem)))
        }
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("tls.cert {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {}: no certificate found", path.display()));
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
