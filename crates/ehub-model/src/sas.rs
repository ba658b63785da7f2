//! Shared-access-signature tokens (reference §7.5).

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use thiserror::Error;

/// Characters left unescaped by `encodeURIComponent`-style encoding.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SasError {
    /// The token text does not have the SAS shape.
    #[error("malformed SAS token: {0}")]
    Malformed(&'static str),
    /// The token has expired.
    #[error("SAS token expired at {expiry} (now {now})")]
    Expired {
        /// The token's `se`.
        expiry: u64,
        /// The time of the check.
        now: u64,
    },
    /// The signature does not match the key.
    #[error("SAS signature does not match the key of policy '{0}'")]
    BadSignature(String),
}

impl SasError {
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            SasError::Malformed(_) => "malformed",
            SasError::Expired { .. } => "expired",
            SasError::BadSignature(_) => "bad-signature",
        }
    }
    /// Never transient.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// The parts of a SAS token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` exactly as it appears in the token (still encoded): the signed text.
    pub resource_raw: String,
    /// `sr` decoded.
    pub resource: String,
    /// Decoded base64 signature text.
    pub signature: String,
    /// Expiry, Unix seconds.
    pub expiry: u64,
    /// Policy (key) name.
    pub key_name: String,
}

fn sign(key: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Builds a token for `resource` (an audience such as `sb://ns/hub`), signed with `key`, valid
/// until `expiry` (Unix seconds). Encodes as the Python and JS SDKs do (upper-case escapes).
pub fn generate_sas_token(resource: &str, key_name: &str, key: &str, expiry: u64) -> String {
    let sr = utf8_percent_encode(resource, COMPONENT).to_string();
    let sig = sign(key, &format!("{sr}\n{expiry}"));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}&skn={}",
        utf8_percent_encode(&sig, COMPONENT),
        utf8_percent_encode(key_name, COMPONENT)
    )
}

/// Splits a token into its parts.
pub fn parse_sas_token(token: &str) -> Result<SasToken, SasError> {
    let body = token.trim().strip_prefix("SharedAccessSignature ").ok_or(SasError::Malformed("missing prefix"))?;
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for part in body.split('&') {
        let (k, v) = part.split_once('=').ok_or(SasError::Malformed("field without '='"))?;
        match k {
            "sr" => sr = Some(v),
            "sig" => sig = Some(v),
            "se" => se = Some(v),
            "skn" => skn = Some(v),
            _ => {}
        }
    }
    let decode = |v: &str| percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
    let sr_raw = sr.ok_or(SasError::Malformed("missing sr"))?;
    Ok(SasToken {
        resource_raw: sr_raw.to_owned(),
        resource: decode(sr_raw),
        // '+' in a signature is a base64 character, not a space: decode without that rule.
        signature: percent_decode_str(sig.ok_or(SasError::Malformed("missing sig"))?).decode_utf8_lossy().into_owned(),
        expiry: se
            .ok_or(SasError::Malformed("missing se"))?
            .parse()
            .map_err(|_| SasError::Malformed("se is not a number"))?,
        key_name: decode(skn.ok_or(SasError::Malformed("missing skn"))?),
    })
}

/// Checks a parsed token's signature against `key` and its expiry against `now` (Unix seconds).
pub fn verify_sas_token(t: &SasToken, key: &str, now: u64) -> Result<(), SasError> {
    let expected = sign(key, &format!("{}\n{}", t.resource_raw, t.expiry));
    // Constant-time comparison of the base64 texts.
    let a = expected.as_bytes();
    let b = t.signature.as_bytes();
    let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if !same {
        return Err(SasError::BadSignature(t.key_name.clone()));
    }
    if t.expiry <= now {
        return Err(SasError::Expired { expiry: t.expiry, now });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_sdk_golden_vector_verifies() {
        let tok = "SharedAccessSignature sr=amqps%3a%2f%2fexample.servicebus.windows.net%2fmyhub&sig=SgJoMn7K6nWDCF6e1%2BfsxrmJLsorqPeZ3B8N1uQ31dc%3D&se=1700000000&skn=RootManageSharedAccessKey";
        let t = parse_sas_token(tok).unwrap();
        assert_eq!(t.resource, "amqps://example.servicebus.windows.net/myhub");
        verify_sas_token(&t, "mykey", 1_600_000_000).unwrap();
        assert!(matches!(verify_sas_token(&t, "other", 1_600_000_000), Err(SasError::BadSignature(_))));
        assert!(matches!(verify_sas_token(&t, "mykey", 1_700_000_001), Err(SasError::Expired { .. })));
    }

    #[test]
    fn upper_case_encoding_matches_python_vector() {
        let tok = generate_sas_token(
            "amqps://example.servicebus.windows.net/myhub",
            "RootManageSharedAccessKey",
            "mykey",
            1_700_000_000,
        );
        assert!(tok.contains("sig=J40b3ojd%2BBRX%2B48odOoGfLt96aldvIJV7hL%2F2R%2F6a28%3D"), "{tok}");
        let t = parse_sas_token(&tok).unwrap();
        verify_sas_token(&t, "mykey", 0).unwrap();
    }
}
