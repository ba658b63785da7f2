//! TLS for the AMQP listeners: a certificate and key from PEM files, or a development CA kept
//! in the data directory that issues a server certificate for this machine's names.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the server certificate comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TlsSource {
    /// No TLS listeners.
    #[default]
    Off,
    /// A certificate chain and its private key, PEM.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A development CA created on first start at `<data-dir>/tls/ca.pem` (kept across
    /// restarts, so clients trust it once) that issues a fresh server certificate at every
    /// start for `localhost`, `127.0.0.1`, `::1` and [`TlsConfig::hosts`].
    SelfSigned,
}

/// TLS settings: the certificate, and where AMQP over TLS and AMQP over WebSockets over TLS
/// are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate's source; [`TlsSource::Off`] serves no TLS.
    pub source: TlsSource,
    /// Host names (or IP addresses) the self-signed certificate names besides the local ones.
    pub hosts: Vec<String>,
    /// AMQP over TLS (the service's port 5671). Default 127.0.0.1:5671.
    pub listen: Option<SocketAddr>,
    /// AMQP over WebSockets over TLS (the service's port 443). Default off.
    pub listen_websocket: Option<SocketAddr>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            source: TlsSource::Off,
            hosts: Vec::new(),
            listen: Some("127.0.0.1:5671".parse().expect("valid address")),
            listen_websocket: None,
        }
    }
}

impl TlsConfig {
    /// Whether any TLS listener runs.
    pub fn enabled(&self) -> bool {
        self.source != TlsSource::Off
    }
}

/// The server configuration, and the development CA's path when self-signed.
pub(crate) struct Loaded {
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {what} {path}: {message}")]
pub struct TlsError {
    what: &'static str,
    path: PathBuf,
    message: String,
}

fn err(what: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError { what, path: path.to_owned(), message: message.to_string() }
}

/// Builds the rustls server configuration (blocking file IO: call off the reactor).
pub(crate) fn load(config: &TlsConfig, data_dir: &Path) -> Result<Option<Loaded>, TlsError> {
    let (chain, key, ca) = match &config.source {
        TlsSource::Off => return Ok(None),
        TlsSource::Files { cert, key } => (read_chain(cert)?, read_key(key)?, None),
        TlsSource::SelfSigned => {
            let (chain, key, ca) = self_signed(&data_dir.join("tls"), &config.hosts)?;
            (chain, key, Some(ca))
        }
    };
    let cert_path = match &config.source {
        TlsSource::Files { cert, .. } => cert.clone(),
        _ => data_dir.join("tls").join("server.pem"),
    };
    // AES-128-GCM first, and the server's order over the client's: the same protection class
    // the service offers, at less CPU per byte than AES-256-GCM (which rustls clients list
    // first), on a machine where the broker and its clients share the cores.
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| !format!("{:?}", s.suite()).contains("AES_128_GCM"));
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| err("configuring", &cert_path, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| err("using the certificate", &cert_path, e))?;
    server.ignore_client_order = true;
    Ok(Some(Loaded { server: Arc::new(server), ca }))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| err("reading the certificate", path, e))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err("parsing the certificate", path, e))?;
    if chain.is_empty() {
        return Err(err("reading the certificate", path, "no PEM CERTIFICATE block"));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| err("reading the key", path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| err("parsing the key", path, e))?
        .ok_or_else(|| err("reading the key", path, "no PEM PRIVATE KEY block"))
}

/// The development CA's identity. The CA certificate is written once; its key is kept beside
/// it, and an issuer is rebuilt from the same name and key at every start, so every server
/// certificate chains to the `ca.pem` that clients were given.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "ehub development CA");
    p.distinguished_name.push(DnType::OrganizationName, "ehub");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err("writing", path, e))?;
    f.write_all(contents.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| err("writing", path, e))
}

type Issued = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, PathBuf);

fn self_signed(dir: &Path, hosts: &[String]) -> Result<Issued, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| err("creating", dir, e))?;
    let (ca_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let ca_key = if ca_path.exists() && ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|e| err("reading", &ca_key_path, e))?;
        KeyPair::from_pem(&pem).map_err(|e| err("parsing", &ca_key_path, e))?
    } else {
        let key = KeyPair::generate().map_err(|e| err("generating a key for", &ca_path, e))?;
        let cert = ca_params().self_signed(&key).map_err(|e| err("creating", &ca_path, e))?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_path, cert.pem()).map_err(|e| err("writing", &ca_path, e))?;
        tracing::info!(path = %ca_path.display(), "created a development CA");
        key
    };
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    names.extend(hosts.iter().filter(|h| !names.contains(h)).cloned().collect::<Vec<_>>());
    let mut params = CertificateParams::new(names).map_err(|e| err("naming", dir, e))?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| err("generating a key in", dir, e))?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| err("issuing a certificate in", dir, e))?;
    write_private(&dir.join("server-key.pem"), &key.serialize_pem())?;
    let server_pem = dir.join("server.pem");
    std::fs::write(&server_pem, cert.pem()).map_err(|e| err("writing", &server_pem, e))?;
    Ok((vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key.serialize_der().into()), ca_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_ca_is_kept_and_every_server_certificate_chains_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            TlsConfig { source: TlsSource::SelfSigned, hosts: vec!["ehub.test".into()], ..TlsConfig::default() };
        let first = load(&config, dir.path()).unwrap().unwrap();
        let ca_path = first.ca.clone().unwrap();
        let ca_pem = std::fs::read(&ca_path).unwrap();
        let second = load(&config, dir.path()).unwrap().unwrap();
        assert_eq!(std::fs::read(second.ca.unwrap()).unwrap(), ca_pem, "the CA survives a restart");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("tls/ca-key.pem")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the CA key is private");

        // The second start's server certificate verifies against the first start's CA for
        // every name, and not for another.
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let leaf = read_chain(&dir.path().join("tls/server.pem")).unwrap().remove(0);
        let now = rustls::pki_types::UnixTime::now();
        for name in ["localhost", "127.0.0.1", "ehub.test"] {
            let server_name = rustls::pki_types::ServerName::try_from(name).unwrap();
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                &*verifier,
                &leaf,
                &[],
                &server_name,
                &[],
                now,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        assert!(rustls::client::danger::ServerCertVerifier::verify_server_cert(
            &*verifier,
            &leaf,
            &[],
            &other,
            &[],
            now
        )
        .is_err());
    }

    #[test]
    fn missing_or_wrong_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsConfig {
            source: TlsSource::Files { cert: dir.path().join("nope.pem"), key: dir.path().join("nope-key.pem") },
            ..TlsConfig::default()
        };
        let e = load(&missing, dir.path()).err().unwrap().to_string();
        assert!(e.contains("nope.pem"), "{e}");
        let not_pem = dir.path().join("junk.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let junk =
            TlsConfig { source: TlsSource::Files { cert: not_pem.clone(), key: not_pem }, ..TlsConfig::default() };
        let e = load(&junk, dir.path()).err().unwrap().to_string();
        assert!(e.contains("no PEM CERTIFICATE block"), "{e}");
    }
}
