//! Event Hubs connection strings (reference §3).

use std::fmt;
use thiserror::Error;

/// A parsed connection string. `Debug` never prints the key or signature.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ConnectionString {
    /// Namespace host (no scheme, no port).
    pub host: String,
    /// Port given in the endpoint, if any.
    pub port: Option<u16>,
    /// SAS policy name.
    pub shared_access_key_name: Option<String>,
    /// SAS key.
    pub shared_access_key: Option<String>,
    /// Pre-formed SAS token.
    pub shared_access_signature: Option<String>,
    /// Event Hub name.
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`: plain AMQP, default port 5672.
    pub use_development_emulator: bool,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("shared_access_key_name", &self.shared_access_key_name)
            .field("shared_access_key", &self.shared_access_key.as_ref().map(|_| "<redacted>"))
            .field("shared_access_signature", &self.shared_access_signature.as_ref().map(|_| "<redacted>"))
            .field("entity_path", &self.entity_path)
            .field("use_development_emulator", &self.use_development_emulator)
            .finish()
    }
}

/// Why a connection string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConnectionStringError {
    /// No `Endpoint`.
    #[error("connection string has no Endpoint (expected Endpoint=sb://<namespace>/)")]
    MissingEndpoint,
    /// The endpoint is not a URL with a host.
    #[error("connection string Endpoint '{0}' is not of the form sb://<host>[:port]/")]
    BadEndpoint(String),
    /// Neither a key nor a signature.
    #[error("connection string needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature")]
    MissingCredential,
    /// A segment without `=`.
    #[error("connection string segment '{0}' is not key=value")]
    BadSegment(String),
}

impl ConnectionStringError {
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        "invalid-connection-string"
    }
    /// Never transient.
    pub fn is_transient(&self) -> bool {
        false
    }
}

impl ConnectionString {
    /// Parses `key=value;...`. Keys are case-insensitive; each pair splits on the first `=`.
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        let mut cs = ConnectionString::default();
        let mut endpoint = None;
        for seg in s.split(';') {
            let seg = seg.trim();
            if seg.is_empty() {
                continue;
            }
            let (k, v) = seg.split_once('=').ok_or_else(|| ConnectionStringError::BadSegment(seg.to_owned()))?;
            let (k, v) = (k.trim(), v.trim());
            match k.to_ascii_lowercase().as_str() {
                "endpoint" | "hostname" => endpoint = Some(v.to_owned()),
                "sharedaccesskeyname" => cs.shared_access_key_name = Some(v.to_owned()),
                "sharedaccesskey" => cs.shared_access_key = Some(v.to_owned()),
                "sharedaccesssignature" => cs.shared_access_signature = Some(v.to_owned()),
                "entitypath" => cs.entity_path = Some(v.to_owned()).filter(|p| !p.is_empty()),
                "usedevelopmentemulator" => cs.use_development_emulator = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        let endpoint = endpoint.ok_or(ConnectionStringError::MissingEndpoint)?;
        let after_scheme = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, r)| r);
        let authority = after_scheme.split('/').next().unwrap_or("");
        if authority.is_empty() {
            return Err(ConnectionStringError::BadEndpoint(endpoint));
        }
        match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(']') || p.parse::<u16>().is_ok() => {
                cs.host = h.to_owned();
                cs.port = Some(p.parse().map_err(|_| ConnectionStringError::BadEndpoint(endpoint.clone()))?);
            }
            _ => cs.host = authority.to_owned(),
        }
        if cs.shared_access_signature.is_none()
            && (cs.shared_access_key_name.is_none() || cs.shared_access_key.is_none())
        {
            return Err(ConnectionStringError::MissingCredential);
        }
        Ok(cs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_string() {
        let cs = ConnectionString::parse(
            "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
        )
        .unwrap();
        assert_eq!(cs.host, "localhost");
        assert_eq!(cs.port, None);
        assert!(cs.use_development_emulator);
        assert_eq!(cs.shared_access_key.as_deref(), Some("SAS_KEY_VALUE"));
        assert!(!format!("{cs:?}").contains("SAS_KEY_VALUE"));
    }

    #[test]
    fn ports_paths_and_base64_keys() {
        let cs = ConnectionString::parse(
            "endpoint=sb://ns.servicebus.windows.net:5673/;sharedaccesskeyname=k;sharedaccesskey=abc==;EntityPath=hub",
        )
        .unwrap();
        assert_eq!((cs.host.as_str(), cs.port), ("ns.servicebus.windows.net", Some(5673)));
        assert_eq!(cs.shared_access_key.as_deref(), Some("abc=="));
        assert_eq!(cs.entity_path.as_deref(), Some("hub"));
        assert!(!cs.use_development_emulator);
    }

    #[test]
    fn errors() {
        assert_eq!(ConnectionString::parse("SharedAccessKey=x"), Err(ConnectionStringError::MissingEndpoint));
        assert_eq!(ConnectionString::parse("Endpoint=sb://h/"), Err(ConnectionStringError::MissingCredential));
        assert!(ConnectionString::parse(
            "Endpoint=sb://h/;SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1&skn=k"
        )
        .is_ok());
        assert!(matches!(ConnectionString::parse("Endpoint=sb://h/;junk"), Err(ConnectionStringError::BadSegment(_))));
    }
}
