//! Credentials: SAS keys, pre-formed SAS tokens, and any `azure_core` [`TokenCredential`].
//!
//! Every kind ends up as a CBS `put-token` for the audience of the entity being used
//! (reference §7): a SAS key signs a fresh token for each audience, a SAS token is sent as is,
//! and a `TokenCredential` supplies a JWT for the Event Hubs scope.

use crate::error::{Error, ErrorKind, Result};
#[cfg(feature = "token-credential")]
use azure_core::credentials::TokenCredential;
use ehub_model::nodes;
use std::fmt;
#[cfg(feature = "token-credential")]
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The Entra ID scope of Event Hubs.
pub const EVENTHUBS_SCOPE: &str = "https://eventhubs.azure.net/.default";

/// A shared access key: a policy name and its key. Tokens are signed per audience.
#[derive(Clone)]
pub struct SasKeyCredential {
    key_name: String,
    key: String,
    token_lifetime: Duration,
}

impl SasKeyCredential {
    /// A credential for the policy `key_name` with `key`. Tokens live one hour, like the
    /// official SDKs' tokens.
    pub fn new(key_name: impl Into<String>, key: impl Into<String>) -> Self {
        SasKeyCredential { key_name: key_name.into(), key: key.into(), token_lifetime: Duration::from_secs(3600) }
    }

    /// Changes how long each signed token is valid. Tokens are refreshed on live connections
    /// when a tenth of their lifetime is left.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime.max(Duration::from_secs(1));
        self
    }

    /// The policy name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }
}

impl fmt::Debug for SasKeyCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasKeyCredential").field("key_name", &self.key_name).field("key", &"<redacted>").finish()
    }
}

/// A pre-formed `SharedAccessSignature sr=…&sig=…&se=…&skn=…` token. It cannot be refreshed:
/// once it expires, operations fail with an authentication error.
#[derive(Clone)]
pub struct SasTokenCredential {
    token: String,
    expiry: u64,
}

impl SasTokenCredential {
    /// Parses the token (for its expiry).
    pub fn new(token: impl Into<String>) -> Result<Self> {
        let token = token.into();
        let parsed = ehub_model::parse_sas_token(&token)
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("invalid SAS token: {e}")).with_source(e))?;
        Ok(SasTokenCredential { token, expiry: parsed.expiry })
    }
}

impl fmt::Debug for SasTokenCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasTokenCredential").field("expiry", &self.expiry).finish_non_exhaustive()
    }
}

/// Any credential the client can authenticate with.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A shared access key.
    SasKey(SasKeyCredential),
    /// A pre-formed SAS token.
    SasToken(SasTokenCredential),
    /// An Entra ID credential (for example from `azure_identity`). Needs the default feature
    /// `token-credential`.
    #[cfg(feature = "token-credential")]
    Token(Arc<dyn TokenCredential>),
}

impl From<SasKeyCredential> for Credential {
    fn from(c: SasKeyCredential) -> Self {
        Credential::SasKey(c)
    }
}

impl From<SasTokenCredential> for Credential {
    fn from(c: SasTokenCredential) -> Self {
        Credential::SasToken(c)
    }
}

#[cfg(feature = "token-credential")]
impl From<Arc<dyn TokenCredential>> for Credential {
    fn from(c: Arc<dyn TokenCredential>) -> Self {
        Credential::Token(c)
    }
}

/// A token ready for `put-token`.
#[derive(Debug, Clone)]
pub(crate) struct CbsToken {
    pub token: String,
    pub token_type: &'static str,
    /// Unix seconds.
    pub expires_at: u64,
    /// Whether asking again yields a fresh token.
    pub refreshable: bool,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Credential {
    /// A token for `audience`.
    pub(crate) async fn token(&self, audience: &str) -> Result<CbsToken> {
        match self {
            Credential::SasKey(k) => {
                let expires_at = unix_now() + k.token_lifetime.as_secs();
                Ok(CbsToken {
                    token: ehub_model::generate_sas_token(audience, &k.key_name, &k.key, expires_at),
                    token_type: nodes::SAS_TOKEN_TYPE,
                    expires_at,
                    refreshable: true,
                })
            }
            Credential::SasToken(t) => Ok(CbsToken {
                token: t.token.clone(),
                token_type: nodes::SAS_TOKEN_TYPE,
                expires_at: t.expiry,
                refreshable: false,
            }),
            #[cfg(feature = "token-credential")]
            Credential::Token(c) => {
                let t = c.get_token(&[EVENTHUBS_SCOPE], None).await.map_err(|e| {
                    Error::new(ErrorKind::Authentication, format!("the token credential failed: {e}")).with_source(e)
                })?;
                Ok(CbsToken {
                    token: t.token.secret().to_owned(),
                    token_type: nodes::JWT_TOKEN_TYPE,
                    expires_at: t.expires_on.unix_timestamp().max(0) as u64,
                    refreshable: true,
                })
            }
        }
    }
}
