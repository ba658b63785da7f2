//! Shared access signatures signed with an account key: account SAS (`ss`, `srt`) and Blob
//! service SAS (`sr=c` or `sr=b`), in each string-to-sign layout the SDKs use by `sv`.
//!
//! ```
//! use ehub_storage_auth::{sas::Sas, SharedKey, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
//! let key = SharedKey::new(DEV_ACCOUNT, DEV_ACCOUNT_KEY).unwrap();
//! let token = key.sign_sas(&[
//!     ("sv", "2021-12-02"), ("sr", "c"), ("sp", "rwl"), ("se", "2099-01-01T00:00:00Z"),
//! ], Some(("checkpoints", None)));
//! let sas = Sas::parse(&token).unwrap();
//! assert!(key.verify_sas(&sas, "checkpoints", None));
//! assert!(!key.verify_sas(&sas, "other", None));
//! ```

use crate::SharedKey;
use base64::Engine;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The SAS parameters of a request's query, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sas {
    params: BTreeMap<String, String>,
}

/// What a SAS grants access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasKind {
    /// An account SAS: services `ss`, resource types `srt`.
    Account,
    /// A service SAS for a whole container (`sr=c`).
    Container,
    /// A service SAS for one blob (`sr=b`).
    Blob,
    /// Any other `sr` (snapshots, versions, directories): not supported here.
    Other,
}

impl Sas {
    /// Reads the SAS parameters of a query string (with or without a leading `?`); `None` when
    /// it carries no signature (`sig`).
    pub fn parse(query: &str) -> Option<Sas> {
        let mut params = BTreeMap::new();
        for pair in query.trim_start_matches('?').split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
            params.insert(k.to_owned(), v);
        }
        params.contains_key("sig").then_some(Sas { params })
    }

    /// A parameter's value, `""` when absent.
    pub fn get(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }

    /// The kind of SAS.
    pub fn kind(&self) -> SasKind {
        if self.params.contains_key("ss") || self.params.contains_key("srt") {
            return SasKind::Account;
        }
        match self.get("sr") {
            "c" => SasKind::Container,
            "b" => SasKind::Blob,
            _ => SasKind::Other,
        }
    }

    /// The signed permissions (`sp`), such as `rwdlc`.
    pub fn permissions(&self) -> &str {
        self.get("sp")
    }

    /// Whether `now` lies within `st` (if given) and `se`. A SAS with no or an unreadable
    /// expiry is never valid.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        let Some(expiry) = parse_iso8601(self.get("se")) else { return false };
        let start = match self.get("st") {
            "" => None,
            s => match parse_iso8601(s) {
                Some(t) => Some(t),
                None => return false,
            },
        };
        // The service allows a little clock skew at the start.
        start.is_none_or(|s| now + Duration::from_secs(300) >= s) && now < expiry
    }

    /// The string an account SAS signs: account, `sp`, `ss`, `srt`, `st`, `se`, `sip`, `spr`, `sv`,
    /// plus `ses` from version 2020-12-06, each followed by a newline.
    pub fn account_string_to_sign(&self, account: &str) -> String {
        let mut fields = vec![account, self.get("sp"), self.get("ss"), self.get("srt")];
        fields.extend([self.get("st"), self.get("se"), self.get("sip"), self.get("spr"), self.get("sv")]);
        if self.get("sv") >= "2020-12-06" {
            fields.push(self.get("ses"));
        }
        let mut s = fields.join("\n");
        s.push('\n');
        s
    }

    /// The string a Blob service SAS signs, in the layout of its `sv`: before 2018-11-09 without
    /// `sr` and the snapshot time; before 2020-12-06 without `ses`.
    pub fn service_string_to_sign(&self, account: &str, container: &str, blob: Option<&str>) -> String {
        let resource = match blob {
            Some(b) => format!("/blob/{account}/{container}/{b}"),
            None => format!("/blob/{account}/{container}"),
        };
        let sv = self.get("sv");
        let mut fields = vec![self.get("sp"), self.get("st"), self.get("se"), resource.as_str(), self.get("si")];
        fields.extend([self.get("sip"), self.get("spr"), sv]);
        if sv >= "2018-11-09" {
            fields.extend([self.get("sr"), self.get("snapshot")]);
        }
        if sv >= "2020-12-06" {
            fields.push(self.get("ses"));
        }
        fields.extend([self.get("rscc"), self.get("rscd"), self.get("rsce"), self.get("rscl"), self.get("rsct")]);
        fields.join("\n")
    }
}

impl SharedKey {
    /// Whether `sas` is signed with this key for `container` (and `blob`, for a blob SAS). It
    /// checks the signature only: time, permissions and resource types are the caller's.
    pub fn verify_sas(&self, sas: &Sas, container: &str, blob: Option<&str>) -> bool {
        let string_to_sign = match sas.kind() {
            SasKind::Account => sas.account_string_to_sign(self.account()),
            SasKind::Container => sas.service_string_to_sign(self.account(), container, None),
            SasKind::Blob => match blob {
                Some(b) => sas.service_string_to_sign(self.account(), container, Some(b)),
                None => return false,
            },
            SasKind::Other => return false,
        };
        let Ok(signature) = crate::BASE64.decode(sas.get("sig")) else { return false };
        self.verify_signature(&string_to_sign, &signature)
    }

    /// A SAS query string (without `?`) from `params` (`sv`, `sp`, `se`, and `ss`/`srt` for an
    /// account SAS or `sr` for a service SAS), signed with this key. `resource` is the
    /// container and blob of a service SAS. For tests and tools; clients get SAS tokens from
    /// Azure's tools.
    pub fn sign_sas(&self, params: &[(&str, &str)], resource: Option<(&str, Option<&str>)>) -> String {
        let mut sas = Sas { params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let string_to_sign = match (sas.kind(), resource) {
            (SasKind::Account, _) | (_, None) => sas.account_string_to_sign(self.account()),
            (_, Some((container, blob))) => sas.service_string_to_sign(self.account(), container, blob),
        };
        sas.params.insert("sig".into(), self.sign(&string_to_sign));
        sas.params
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Reads the ISO 8601 UTC times a SAS carries: `2026-12-01`, `2026-12-01T10:00Z`,
/// `2026-12-01T10:00:00Z` or with fractional seconds.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    // Four-digit years, as SAS times have them; a longer year would overflow the arithmetic
    // below (found by the blob_request fuzz target).
    if d.next().is_some() || !(0..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(t) = time {
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let mut parts = hms.split(':');
        let h: i64 = parts.next()?.parse().ok()?;
        let min: i64 = parts.next()?.parse().ok()?;
        let sec: i64 = match parts.next() {
            Some(x) => x.parse().ok()?,
            None => 0,
        };
        let in_range = (0..=23).contains(&h) && (0..=59).contains(&min) && (0..=60).contains(&sec);
        if parts.next().is_some() || !in_range || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        secs += h * 3600 + min * 60 + sec;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Formats a time as the service writes it in messages: `2026-12-01T10:00:00.0000000Z`.
pub fn format_iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.0000000Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEV_ACCOUNT, DEV_ACCOUNT_KEY};

    #[test]
    fn iso8601_times_parse() {
        let t = |s| parse_iso8601(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(t("1970-01-01"), Some(0));
        assert_eq!(t("2026-12-01T10:00:00Z"), Some(1_796_119_200));
        assert_eq!(t("2026-12-01T10:00Z"), Some(1_796_119_200));
        assert_eq!(t("2026-12-01T10:00:00.1234567Z"), Some(1_796_119_200));
        assert_eq!(t("2000-03-01T00:00:00Z"), Some(951_868_800));
        for bad in [
            "",
            "2026-13-01",
            "2026-12-01T10:00:00",
            "x",
            "2026-12-01T25:00:00Z",
            "2026-12-01T-1:00:00Z",
            // Found by fuzzing: a year this long overflowed the day arithmetic.
            "00000004925003443224677953-01-01T00:00:00Z",
            "10000-01-01",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso8601_round_trips() {
        for secs in [0u64, 951_868_800, 1_796_119_200] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let text = format_iso8601(t);
            assert_eq!(parse_iso8601(&text), Some(t), "{text}");
        }
        assert_eq!(format_iso8601(UNIX_EPOCH + Duration::from_secs(1_796_119_200)), "2026-12-01T10:00:00.0000000Z");
    }

    #[test]
    fn string_to_sign_layouts_follow_the_version() {
        let sas = |sv: &str, extra: &str| {
            Sas::parse(&format!("sv={sv}&sr=c&sp=rl&se=2099-01-01T00%3A00%3A00Z{extra}&sig=x")).unwrap()
        };
        assert_eq!(
            sas("2015-04-05", "").service_string_to_sign("a", "c", None),
            "rl\n\n2099-01-01T00:00:00Z\n/blob/a/c\n\n\n\n2015-04-05\n\n\n\n\n"
        );
        assert_eq!(
            sas("2019-07-07", "").service_string_to_sign("a", "c", None),
            "rl\n\n2099-01-01T00:00:00Z\n/blob/a/c\n\n\n\n2019-07-07\nc\n\n\n\n\n\n"
        );
        assert_eq!(
            sas("2021-12-02", "&ses=scope").service_string_to_sign("a", "c", None),
            "rl\n\n2099-01-01T00:00:00Z\n/blob/a/c\n\n\n\n2021-12-02\nc\n\nscope\n\n\n\n\n"
        );
        let account = Sas::parse("sv=2019-07-07&ss=b&srt=sco&sp=rl&se=2099-01-01&sig=x").unwrap();
        assert_eq!(account.kind(), SasKind::Account);
        assert_eq!(account.account_string_to_sign("a"), "a\nrl\nb\nsco\n\n2099-01-01\n\n\n2019-07-07\n");
        let account = Sas::parse("sv=2021-12-02&ss=b&srt=sco&sp=rl&se=2099-01-01&sig=x").unwrap();
        assert_eq!(account.account_string_to_sign("a"), "a\nrl\nb\nsco\n\n2099-01-01\n\n\n2021-12-02\n\n");
    }

    #[test]
    fn signed_tokens_verify_only_for_their_resource_key_and_time() {
        let key = SharedKey::new(DEV_ACCOUNT, DEV_ACCOUNT_KEY).unwrap();
        let other = SharedKey::new(DEV_ACCOUNT, "QUJD").unwrap();
        let blob = key.sign_sas(
            &[("sv", "2026-04-06"), ("sr", "b"), ("sp", "r"), ("se", "2099-01-01T00:00:00Z")],
            Some(("c", Some("ns/hub/$default/checkpoint/0"))),
        );
        let sas = Sas::parse(&blob).unwrap();
        assert_eq!(sas.kind(), SasKind::Blob);
        assert!(key.verify_sas(&sas, "c", Some("ns/hub/$default/checkpoint/0")));
        assert!(!key.verify_sas(&sas, "c", Some("ns/hub/$default/checkpoint/1")));
        assert!(!key.verify_sas(&sas, "c", None));
        assert!(!other.verify_sas(&sas, "c", Some("ns/hub/$default/checkpoint/0")));
        assert!(sas.is_valid_at(SystemTime::now()));
        let expired = Sas::parse(&key.sign_sas(
            &[("sv", "2019-07-07"), ("ss", "b"), ("srt", "sco"), ("sp", "rwdlc"), ("se", "2020-01-01")],
            None,
        ))
        .unwrap();
        assert!(key.verify_sas(&expired, "anything", None));
        assert!(!expired.is_valid_at(SystemTime::now()));
        let not_yet = Sas::parse("sv=2019-07-07&ss=b&srt=o&sp=r&st=2098-01-01&se=2099-01-01&sig=x").unwrap();
        assert!(!not_yet.is_valid_at(SystemTime::now()));
        assert!(Sas::parse("sv=2019-07-07&sp=r").is_none(), "no signature, no SAS");
    }
}
