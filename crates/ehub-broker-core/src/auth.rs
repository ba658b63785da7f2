//! Token auth as the service does it: SAS tokens checked against the policies (signature,
//! expiry, audience), `jwt` tokens accepted unverified when the configuration says so. Every
//! front authorizes through here (CBS put-token on AMQP; SASL PLAIN on Kafka).

use crate::config::Rights;
use crate::state::Broker;
use std::time::{SystemTime, UNIX_EPOCH};

/// What kind of token a client presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// A shared access signature (`SharedAccessSignature sr=…&sig=…&se=…&skn=…`).
    Sas,
    /// An Entra ID token.
    Jwt,
}

/// What an accepted token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The lower-case entity path the token covers (`eh1`, `eh1/partitions/0`, `` for all).
    pub path: String,
    /// Unix seconds after which the grant lapses.
    pub expiry: u64,
    /// The policy's rights.
    pub rights: Rights,
}

/// The service's prefix for a refusal that guessing produces (a bad signature, an unknown
/// policy, a malformed token): the refusals the failed-authorization limit counts.
const INVALID_SIGNATURE: &str = "InvalidSignature";

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Normalises an audience or address to its lower-case entity path (no scheme, no host).
pub fn entity_path(s: &str) -> String {
    let path = match s.find("://") {
        Some(i) => s[i + 3..].find('/').map_or("", |j| &s[i + 3 + j..]),
        None => s,
    };
    path.trim_matches('/').to_ascii_lowercase()
}

/// Whether a token for `token_path` covers `entity` (itself or anything below it; a token for
/// the namespace, path ``, covers every entity).
pub fn covers(token_path: &str, entity: &str) -> bool {
    token_path.is_empty()
        || entity == token_path
        || (entity.starts_with(token_path) && entity.as_bytes().get(token_path.len()) == Some(&b'/'))
}

impl Broker {
    /// Checks a token for `audience`. The error is the service's description
    /// (`InvalidSignature: …`, `ExpiredToken: …`, `InvalidAudience: …`).
    pub fn authorize(&self, token_type: TokenType, token: &str, audience: &str) -> Result<Grant, String> {
        match token_type {
            TokenType::Jwt if self.config.accept_jwt => {
                Ok(Grant { path: entity_path(audience), expiry: now_secs() + 3600, rights: Rights::ALL })
            }
            TokenType::Jwt => Err("The token type 'jwt' is not accepted by this broker.".to_string()),
            TokenType::Sas => self.check_sas(token, audience),
        }
    }

    /// [`Broker::authorize`] for a client at `ip`, under the failed-authorization limit: an
    /// address that failed too often lately is refused unchecked until its window ends, and a
    /// bad signature here counts against it.
    pub fn authorize_from(
        &self,
        ip: std::net::IpAddr,
        token_type: TokenType,
        token: &str,
        audience: &str,
    ) -> Result<Grant, String> {
        if let Some(wait) = self.admission().auth_throttled(ip) {
            return Err(format!(
                "Too many failed authorization attempts from {ip}. Try again in {} seconds.",
                wait.as_secs().max(1)
            ));
        }
        let r = self.authorize(token_type, token, audience);
        // Only what guessing produces counts: a bad signature or an unknown policy. An expired
        // token or one for another entity is a client's honest mistake, often repeated in a
        // retry loop, and must not lock other clients on the same address out.
        if r.as_ref().is_err_and(|e| e.starts_with(INVALID_SIGNATURE)) {
            self.admission().auth_failed(ip);
        }
        r
    }

    fn check_sas(&self, token: &str, audience: &str) -> Result<Grant, String> {
        let t = ehub_model::parse_sas_token(token).map_err(|e| format!("{INVALID_SIGNATURE}: {e}"))?;
        let policy = self.policy(&t.key_name);
        let rights = if self.config.verify_sas {
            let p = policy.ok_or_else(|| {
                format!("{INVALID_SIGNATURE}: The token has an invalid signature. Unknown policy '{}'.", t.key_name)
            })?;
            ehub_model::verify_sas_token(&t, &p.key, now_secs()).map_err(|e| match e {
                ehub_model::SasError::Expired { .. } => {
                    format!("ExpiredToken: The token is expired. Expiration time: '{}'", t.expiry)
                }
                other => format!("{INVALID_SIGNATURE}: The token has an invalid signature. {other}"),
            })?;
            p.rights
        } else {
            policy.map_or(Rights::ALL, |p| p.rights)
        };
        let signed = entity_path(&t.resource);
        let wanted = entity_path(audience);
        if !covers(&signed, &wanted) {
            return Err(format!("InvalidAudience: The token audience '{}' does not cover '{audience}'.", t.resource));
        }
        Ok(Grant { path: wanted, expiry: t.expiry, rights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_coverage() {
        assert_eq!(entity_path("sb://ns.servicebus.windows.net/EH1/Partitions/0"), "eh1/partitions/0");
        assert_eq!(entity_path("amqps://localhost/eh1"), "eh1");
        assert_eq!(entity_path("sb://localhost"), "");
        assert!(covers("eh1", "eh1/partitions/0"));
        assert!(!covers("eh1", "eh10"));
        assert!(covers("", "eh1/consumergroups/$default/partitions/0"));
    }
}
