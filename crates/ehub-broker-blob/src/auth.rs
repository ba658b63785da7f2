//! Who may do what: SharedKey with any of the account's keys, account SAS and Blob service
//! SAS signed with one, or nothing at all in the `none` mode. A refusal is a 403 with the
//! service's code; nothing is written.

use crate::request::Request;
use crate::response::ApiError;
use crate::{BlobAuth, Endpoint};
use ehub_storage_auth::sas::{Sas, SasKind};
use ehub_storage_auth::string_to_sign;
use http::{HeaderMap, Method, StatusCode, Uri};
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

const AUTH_FAILED: &str = "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.";

pub(crate) fn authorize(
    ep: &Endpoint,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    req: &Request,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    if ep.config.auth == BlobAuth::None {
        return Ok(());
    }
    let Some(keys) = ep.keys.get(&req.account) else {
        return Err(forbidden(
            "AuthenticationFailed",
            format!("{AUTH_FAILED} The storage account `{}` is not configured on this endpoint.", req.account),
        ));
    };
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default();
        let Some((account, signature)) = ehub_storage_auth::parse_authorization(value) else {
            return Err(forbidden(
                "AuthenticationFailed",
                format!("{AUTH_FAILED} Only the SharedKey scheme is accepted in the Authorization header here (bearer tokens need HTTPS); or use a SAS."),
            ));
        };
        if account != req.account {
            return Err(forbidden(
                "AuthenticationFailed",
                format!("{AUTH_FAILED} The request is signed for account `{account}` but addresses `{}`.", req.account),
            ));
        }
        if keys.iter().any(|k| k.verify(method, uri, headers, value)) {
            return Ok(());
        }
        let mut e = forbidden("AuthenticationFailed", AUTH_FAILED);
        let sts = string_to_sign(account, method, uri, headers);
        e.auth_detail = Some(format!(
            "The MAC signature found in the HTTP request '{signature}' is not the same as any computed signature. Server used following string to sign: '{sts}'."
        ));
        return Err(e);
    }
    let Some(sas) = Sas::parse(uri.query().unwrap_or_default()) else {
        return Err(forbidden(
            "NoAuthenticationInformation",
            "Server failed to authenticate the request. Please refer to the information in the www-authenticate header. (Sign the request with SharedKey or add a SAS; `auth = \"none\"` in the broker's [blob] config turns checks off.)",
        ));
    };
    authorize_sas(keys, &sas, req, peer)
}

fn authorize_sas(
    keys: &[ehub_storage_auth::SharedKey],
    sas: &Sas,
    req: &Request,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    if !keys.iter().any(|k| k.verify_sas(sas, &req.container, req.blob.as_deref())) {
        return Err(forbidden(
            "AuthenticationFailed",
            format!("{AUTH_FAILED} Signature did not match (a SAS is valid only for the account, container or blob it was signed for)."),
        ));
    }
    if !sas.is_valid_at(SystemTime::now()) {
        return Err(forbidden(
            "AuthenticationFailed",
            format!(
                "{AUTH_FAILED} Signature not valid in the specified time frame: Start [{}] - Expiry [{}].",
                sas.get("st"),
                sas.get("se")
            ),
        ));
    }
    if sas.get("spr") == "https" {
        return Err(forbidden(
            "AuthorizationProtocolMismatch",
            "This request is not authorized to perform this operation using this protocol (the SAS allows HTTPS only).",
        ));
    }
    if !ip_allowed(sas.get("sip"), peer.ip()) {
        return Err(forbidden(
            "AuthorizationSourceIPMismatch",
            format!("This request is not authorized to perform this operation using this source IP {}.", peer.ip()),
        ));
    }
    let needs = req.operation.needs();
    match sas.kind() {
        SasKind::Account => {
            if !sas.get("ss").contains('b') {
                return Err(forbidden(
                    "AuthorizationServiceMismatch",
                    "This request is not authorized to perform this operation using this service (the SAS lacks `b` in ss).",
                ));
            }
            if !sas.get("srt").contains(needs.resource_type) {
                return Err(forbidden(
                    "AuthorizationResourceTypeMismatch",
                    format!(
                        "This request is not authorized to perform this operation using this resource type (needs `{}` in srt).",
                        needs.resource_type
                    ),
                ));
            }
        }
        SasKind::Blob if req.blob.is_none() => {
            return Err(forbidden(
                "AuthorizationResourceTypeMismatch",
                "This request is not authorized to perform this operation using this resource type (a blob SAS covers one blob).",
            ));
        }
        SasKind::Container
            if matches!(
                req.operation,
                crate::Operation::CreateContainer { .. } | crate::Operation::DeleteContainer { .. }
            ) =>
        {
            return Err(forbidden(
                "AuthorizationResourceTypeMismatch",
                "This request is not authorized to perform this operation using this resource type (a container SAS cannot create or delete its container).",
            ));
        }
        _ => {}
    }
    if !needs.permissions.chars().any(|p| sas.permissions().contains(p)) {
        return Err(forbidden(
            "AuthorizationPermissionMismatch",
            format!(
                "This request is not authorized to perform this operation using this permission ({} needs one of `{}` in sp).",
                req.operation.name(),
                needs.permissions
            ),
        ));
    }
    Ok(())
}

/// Whether `ip` is in the SAS's `sip` (one address or `first-last`); empty allows all.
fn ip_allowed(sip: &str, ip: IpAddr) -> bool {
    if sip.is_empty() {
        return true;
    }
    let (first, last) = sip.split_once('-').unwrap_or((sip, sip));
    match (first.trim().parse::<IpAddr>(), last.trim().parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a <= ip && ip <= b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(ip_allowed("", ip));
        assert!(ip_allowed("127.0.0.1", ip));
        assert!(ip_allowed("127.0.0.0-127.0.0.255", ip));
        assert!(!ip_allowed("10.0.0.1", ip));
        assert!(!ip_allowed("garbage", ip));
    }
}
