//! Webhook signature verification (`verify:` on a webhook trigger, docs/flow-format.md)
//! and Standard Webhooks signing of HTTP deliveries (docs/consuming.md).
//!
//! Every scheme is HMAC-SHA256. A received signature is decoded (hex or
//! base64) and compared with [`Mac::verify_slice`], which is constant-time;
//! the expected signature is never rendered as text.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::webhook::{Scheme, Verify};

type HmacSha256 = Hmac<Sha256>;

/// Standard base64 that accepts input with or without `=` padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

const GITHUB_HEADER: &str = "x-hub-signature-256";
const STRIPE_HEADER: &str = "stripe-signature";
const SW_ID: &str = "webhook-id";
const SW_TIMESTAMP: &str = "webhook-timestamp";
const SW_SIGNATURE: &str = "webhook-signature";
const WHSEC_PREFIX: &str = "whsec_";

/// Why a request's signature does not verify. Messages are for logs: they
/// never contain the secret, the expected signature, or the received header
/// values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A header the scheme needs is absent (lower-case name).
    #[error("missing header `{0}`")]
    MissingHeader(String),
    /// A header is present but cannot be parsed (not hex/base64, wrong
    /// length, no timestamp, ...).
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// The signature(s) are well-formed but none matches.
    #[error("signature does not match")]
    Mismatch,
    /// The signed timestamp is further from now than the tolerance.
    /// `age_secs` is now minus the timestamp: negative means in the future.
    #[error(
        "signed timestamp is outside the tolerance (age {age_secs}s; negative is in the future)"
    )]
    TimestampOutOfTolerance { age_secs: i64 },
    /// The configured secret is unusable (empty, or not `whsec_<base64>`
    /// for Standard Webhooks). A configuration error rather than a bad
    /// request.
    #[error("bad secret: {0}")]
    BadSecret(String),
}

/// What a verified request proves: a digest of the signature that matched.
/// The same signed content sent again gives the same proof, whatever its
/// unsigned headers say, so a replay can be recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof(pub String);

impl Proof {
    fn of(tag: &[u8]) -> Self {
        use sha2::Digest;
        Self(hex::encode(sha2::Sha256::digest(tag)))
    }
}

impl Verify {
    /// Checks a request. `header(name)` returns a header's value by
    /// lower-case name. `secret` is the value of the environment variable
    /// [`Verify::secret_var`]. `body` is the raw request body, byte for
    /// byte.
    pub fn check(
        &self,
        secret: &str,
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Proof, VerifyError> {
        match self.scheme {
            Scheme::HmacSha256 => check_hex_body(secret, &self.header, header, body, false),
            Scheme::Github => check_hex_body(secret, GITHUB_HEADER, header, body, true),
            Scheme::Stripe => check_stripe(secret, header, body, now, self.tolerance),
            Scheme::StandardWebhooks => {
                check_standard_webhooks(secret, header, body, now, self.tolerance)
            }
        }
    }
}

/// Standard Webhooks signature header value (`v1,<base64>`) for a message, used
/// to sign HTTP deliveries. `secret` is `whsec_<base64 key>` (a bare base64
/// key is accepted too).
pub fn standard_webhooks_sign(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, VerifyError> {
    let key = standard_webhooks_key(secret)?;
    let tag = standard_webhooks_mac(&key, id, timestamp, body)?
        .finalize()
        .into_bytes();
    Ok(format!("v1,{}", STANDARD.encode(tag)))
}

/// An HMAC-SHA256 keyed with `key`, refusing an empty key (anyone could
/// forge signatures made with it).
fn mac(key: &[u8]) -> Result<HmacSha256, VerifyError> {
    if key.is_empty() {
        return Err(VerifyError::BadSecret("the secret is empty".into()));
    }
    HmacSha256::new_from_slice(key)
        .map_err(|_| VerifyError::BadSecret("the secret is not a usable HMAC key".into()))
}

fn required(header: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<String, VerifyError> {
    header(name).ok_or_else(|| VerifyError::MissingHeader(name.to_owned()))
}

/// Seconds from `timestamp` to `now` (negative: in the future), rejected
/// when beyond `tolerance` either way.
fn check_tolerance(
    timestamp: i64,
    now: DateTime<Utc>,
    tolerance: std::time::Duration,
) -> Result<(), VerifyError> {
    let age_secs = now.timestamp().saturating_sub(timestamp);
    if std::time::Duration::from_secs(age_secs.unsigned_abs()) > tolerance {
        return Err(VerifyError::TimestampOutOfTolerance { age_secs });
    }
    Ok(())
}

fn parse_timestamp(value: &str, what: &str) -> Result<i64, VerifyError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::Malformed(format!(
            "{what} is not a unix timestamp in seconds"
        )));
    }
    value
        .parse()
        .map_err(|_| VerifyError::Malformed(format!("{what} is out of range")))
}

/// Decodes a hex HMAC-SHA256 tag (either case).
fn decode_hex_tag(hex_text: &str, what: &str) -> Result<Vec<u8>, VerifyError> {
    match hex::decode(hex_text) {
        Ok(tag) if tag.len() == TAG_LEN => Ok(tag),
        _ => Err(VerifyError::Malformed(format!(
            "{what} is not {} hex digits",
            TAG_LEN * 2
        ))),
    }
}

/// `hmac-sha256` (`sha256=` optional) and `github` (`sha256=` required):
/// hex HMAC-SHA256 of the raw body keyed with the secret.
fn check_hex_body(
    secret: &str,
    name: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    prefix_required: bool,
) -> Result<Proof, VerifyError> {
    let mut mac = mac(secret.as_bytes())?;
    let value = required(header, name)?;
    let value = value.trim();
    let hex_text = match value.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256=") => &value[7..],
        _ if prefix_required => {
            return Err(VerifyError::Malformed(format!(
                "`{name}` does not start with `sha256=`"
            )));
        }
        _ => value,
    };
    let tag = decode_hex_tag(hex_text, &format!("`{name}`"))?;
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| VerifyError::Mismatch)?;
    Ok(Proof::of(&tag))
}

/// `stripe`: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...][,v0=...]`,
/// HMAC-SHA256 of `"{t}.{body}"` keyed with the secret string verbatim.
fn check_stripe(
    secret: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: std::time::Duration,
) -> Result<Proof, VerifyError> {
    let mut mac = mac(secret.as_bytes())?;
    let value = required(header, STRIPE_HEADER)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        let Some((key, val)) = item.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(VerifyError::Malformed(format!(
                        "`{STRIPE_HEADER}` has more than one `t`"
                    )));
                }
                timestamp = Some(parse_timestamp(val, "the `t` of `stripe-signature`")?);
            }
            // Undecodable entries cannot match; skip them.
            "v1" => signatures.extend(decode_hex_tag(val.trim(), "v1").ok()),
            _ => {}
        }
    }
    let timestamp = timestamp
        .ok_or_else(|| VerifyError::Malformed(format!("`{STRIPE_HEADER}` has no `t` timestamp")))?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed(format!(
            "`{STRIPE_HEADER}` has no well-formed `v1` signature"
        )));
    }
    check_tolerance(timestamp, now, tolerance)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    any_matches(&mac, &signatures)
}

/// `standard-webhooks`: `webhook-id`, `webhook-timestamp`,
/// `webhook-signature` (space-separated `v1,<base64>` entries), HMAC-SHA256
/// of `"{id}.{timestamp}.{body}"` keyed with the base64-decoded secret.
fn check_standard_webhooks(
    secret: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: std::time::Duration,
) -> Result<Proof, VerifyError> {
    let key = standard_webhooks_key(secret)?;
    let id = required(header, SW_ID)?;
    let timestamp = parse_timestamp(&required(header, SW_TIMESTAMP)?, "`webhook-timestamp`")?;
    let value = required(header, SW_SIGNATURE)?;
    let signatures: Vec<Vec<u8>> = value
        .split_ascii_whitespace()
        .filter_map(|entry| match entry.split_once(',') {
            // Other versions (e.g. `v1a`, asymmetric) are ignored;
            // undecodable entries cannot match.
            Some(("v1", sig)) => BASE64_LENIENT
                .decode(sig)
                .ok()
                .filter(|t| t.len() == TAG_LEN),
            _ => None,
        })
        .collect();
    if signatures.is_empty() {
        return Err(VerifyError::Malformed(format!(
            "`{SW_SIGNATURE}` has no well-formed `v1,<base64>` signature"
        )));
    }
    check_tolerance(timestamp, now, tolerance)?;
    let mac = standard_webhooks_mac(&key, &id, timestamp, body)?;
    any_matches(&mac, &signatures)
}

/// Checks a secret for `scheme` when a flow loads: not empty, and for
/// Standard Webhooks `whsec_` + base64 of 24 to 64 bytes, as the
/// specification asks. The message never shows the secret.
pub fn check_secret(scheme: Scheme, secret: &str) -> Result<(), String> {
    if secret.trim().is_empty() {
        return Err("is set but empty".into());
    }
    if scheme == Scheme::StandardWebhooks {
        check_standard_webhooks_secret(secret)?;
    }
    Ok(())
}

/// A Standard Webhooks secret (signing deliveries, or verifying requests):
/// `whsec_` followed by the base64 of a 24- to 64-byte key.
pub fn check_standard_webhooks_secret(secret: &str) -> Result<(), String> {
    let key = standard_webhooks_key(secret).map_err(|e| match e {
        VerifyError::BadSecret(why) => why,
        other => other.to_string(),
    })?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "holds a {}-byte key; a Standard Webhooks secret must hold 24 to 64 bytes (`whsec_` + base64; e.g. `whsec_$(openssl rand -base64 32)`)",
            key.len()
        ));
    }
    Ok(())
}

/// The key of a Standard Webhooks secret: base64 after an optional `whsec_`.
fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, VerifyError> {
    let secret = secret.trim();
    let encoded = secret.strip_prefix(WHSEC_PREFIX).unwrap_or(secret);
    let key = BASE64_LENIENT.decode(encoded).map_err(|_| {
        VerifyError::BadSecret(
            "a Standard Webhooks secret must be `whsec_` followed by base64".into(),
        )
    })?;
    if key.is_empty() {
        return Err(VerifyError::BadSecret("the secret is empty".into()));
    }
    Ok(key)
}

fn standard_webhooks_mac(
    key: &[u8],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<HmacSha256, VerifyError> {
    let mut mac = mac(key)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// Whether any candidate tag matches, each compared in constant time.
fn any_matches(mac: &HmacSha256, candidates: &[Vec<u8>]) -> Result<Proof, VerifyError> {
    // Compare against every candidate (no early exit) so timing does not
    // reveal which entry matched.
    let mut matched = None;
    for tag in candidates {
        if mac.clone().verify_slice(tag).is_ok() {
            matched = Some(tag);
        }
    }
    matched
        .map(|tag| Proof::of(tag))
        .ok_or(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    fn verify(scheme: Scheme, header: &str) -> Verify {
        Verify {
            scheme,
            header: header.into(),
            secret_env: "SECRET".into(),
            secret_env_pos: crate::Pos::default(),
            tolerance: Duration::from_secs(300),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    /// Checks with the given headers.
    fn check(
        v: &Verify,
        secret: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), VerifyError> {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| map.get(name).cloned();
        v.check(secret, &lookup, body, now).map(|_| ())
    }

    fn hex_hmac(key: &[u8], data: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    // --- Standard Webhooks ---------------------------------------------

    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw_check(
        secret: &str,
        id: &str,
        ts: &str,
        sig: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let v = verify(Scheme::StandardWebhooks, "webhook-signature");
        check(
            &v,
            secret,
            &[
                ("webhook-id", id),
                ("webhook-timestamp", ts),
                ("webhook-signature", sig),
            ],
            body,
            at(now),
        )
    }

    #[test]
    fn standard_webhooks_published_vector() {
        assert_eq!(
            standard_webhooks_sign(SW_SECRET, SW_MSG_ID, SW_TS, SW_BODY).unwrap(),
            SW_SIG
        );
        let ts = SW_TS.to_string();
        assert_eq!(
            sw_check(SW_SECRET, SW_MSG_ID, &ts, SW_SIG, SW_BODY, SW_TS),
            Ok(())
        );
        // A secret without the `whsec_` prefix is the bare base64 key.
        let bare = SW_SECRET.strip_prefix("whsec_").unwrap();
        assert_eq!(
            standard_webhooks_sign(bare, SW_MSG_ID, SW_TS, SW_BODY).unwrap(),
            SW_SIG
        );
        assert_eq!(
            sw_check(bare, SW_MSG_ID, &ts, SW_SIG, SW_BODY, SW_TS),
            Ok(())
        );
    }

    #[test]
    fn standard_webhooks_round_trip_and_tampering() {
        let secret = "whsec_c2VjcmV0LWtleS1mb3Itd2Vpci10ZXN0cw==";
        let body = br#"{"order": 17, "status": "paid"}"#;
        let ts = 1_700_000_000;
        let sig = standard_webhooks_sign(secret, "msg_1", ts, body).unwrap();
        assert!(sig.starts_with("v1,"));
        let t = ts.to_string();
        assert_eq!(sw_check(secret, "msg_1", &t, &sig, body, ts + 10), Ok(()));
        // Tampered body, id, timestamp.
        assert_eq!(
            sw_check(
                secret,
                "msg_1",
                &t,
                &sig,
                br#"{"order": 18, "status": "paid"}"#,
                ts
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            sw_check(secret, "msg_2", &t, &sig, body, ts),
            Err(VerifyError::Mismatch)
        );
        let t1 = (ts + 1).to_string();
        assert_eq!(
            sw_check(secret, "msg_1", &t1, &sig, body, ts),
            Err(VerifyError::Mismatch)
        );
        // Another secret.
        let other = "whsec_b3RoZXItc2VjcmV0LWtleQ==";
        assert_eq!(
            sw_check(other, "msg_1", &t, &sig, body, ts),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn standard_webhooks_tolerance_both_ways() {
        let ts = SW_TS.to_string();
        let ok = |now| sw_check(SW_SECRET, SW_MSG_ID, &ts, SW_SIG, SW_BODY, now);
        assert_eq!(ok(SW_TS + 300), Ok(()));
        assert_eq!(ok(SW_TS - 300), Ok(()));
        assert_eq!(
            ok(SW_TS + 301),
            Err(VerifyError::TimestampOutOfTolerance { age_secs: 301 })
        );
        assert_eq!(
            ok(SW_TS - 301),
            Err(VerifyError::TimestampOutOfTolerance { age_secs: -301 })
        );
        // Far-off, non-overflowing and overflowing timestamps.
        assert_eq!(
            sw_check(SW_SECRET, SW_MSG_ID, "0", SW_SIG, SW_BODY, SW_TS),
            Err(VerifyError::TimestampOutOfTolerance { age_secs: SW_TS })
        );
        assert!(matches!(
            sw_check(
                SW_SECRET,
                SW_MSG_ID,
                "99999999999999999999",
                SW_SIG,
                SW_BODY,
                SW_TS
            ),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn standard_webhooks_multiple_signatures() {
        let ts = SW_TS.to_string();
        let wrong = format!("v1,{}", STANDARD.encode([7u8; 32]));
        let header = format!("{wrong} v1a,c29tZXRoaW5n v2,xyz v1,not-base64!! {SW_SIG}");
        assert_eq!(
            sw_check(SW_SECRET, SW_MSG_ID, &ts, &header, SW_BODY, SW_TS),
            Ok(())
        );
        // Only wrong ones.
        let header = format!("{wrong} v1a,{}", &SW_SIG[3..]);
        assert_eq!(
            sw_check(SW_SECRET, SW_MSG_ID, &ts, &header, SW_BODY, SW_TS),
            Err(VerifyError::Mismatch)
        );
        // A correct signature under another version label does not count.
        let header = format!("v1a,{}", &SW_SIG[3..]);
        assert!(matches!(
            sw_check(SW_SECRET, SW_MSG_ID, &ts, &header, SW_BODY, SW_TS),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn standard_webhooks_bad_input() {
        let ts = SW_TS.to_string();
        let v = verify(Scheme::StandardWebhooks, "webhook-signature");
        assert_eq!(
            check(
                &v,
                SW_SECRET,
                &[("webhook-timestamp", &ts), ("webhook-signature", SW_SIG)],
                SW_BODY,
                at(SW_TS)
            ),
            Err(VerifyError::MissingHeader("webhook-id".into()))
        );
        assert!(matches!(
            sw_check(SW_SECRET, SW_MSG_ID, "yesterday", SW_SIG, SW_BODY, SW_TS),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            sw_check("whsec_***", SW_MSG_ID, &ts, SW_SIG, SW_BODY, SW_TS),
            Err(VerifyError::BadSecret(_))
        ));
        assert!(matches!(
            standard_webhooks_sign("whsec_", "id", 1, b""),
            Err(VerifyError::BadSecret(_))
        ));
    }

    // --- GitHub -----------------------------------------------------------

    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_documented_example() {
        assert_eq!(
            format!("sha256={}", hex_hmac(GH_SECRET.as_bytes(), GH_BODY)),
            GH_SIG
        );
        let v = verify(Scheme::Github, "x-hub-signature-256");
        let now = at(0);
        let hdr = [("x-hub-signature-256", GH_SIG)];
        assert_eq!(check(&v, GH_SECRET, &hdr, GH_BODY, now), Ok(()));
        assert_eq!(
            check(&v, GH_SECRET, &hdr, b"Hello, World?", now),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(&v, "another secret", &hdr, GH_BODY, now),
            Err(VerifyError::Mismatch)
        );
        // GitHub always sends the prefix.
        assert!(matches!(
            check(
                &v,
                GH_SECRET,
                &[("x-hub-signature-256", &GH_SIG[7..])],
                GH_BODY,
                now
            ),
            Err(VerifyError::Malformed(_))
        ));
        assert_eq!(
            check(&v, GH_SECRET, &[("x-hub-signature", GH_SIG)], GH_BODY, now),
            Err(VerifyError::MissingHeader("x-hub-signature-256".into()))
        );
    }

    // --- Stripe -----------------------------------------------------------

    const ST_SECRET: &str = "whsec_test_5tr1p3_s3cr3t";

    fn stripe_check(header: &str, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let v = verify(Scheme::Stripe, "stripe-signature");
        check(
            &v,
            ST_SECRET,
            &[("stripe-signature", header)],
            body,
            at(now),
        )
    }

    #[test]
    fn stripe_signature() {
        let t = 1_700_000_000i64;
        let body = br#"{"id": "evt_1", "object": "event"}"#;
        // Independently: HMAC-SHA256 keyed with the secret string verbatim
        // over "{t}.{body}".
        let sig = hex_hmac(
            ST_SECRET.as_bytes(),
            format!("{t}.{}", std::str::from_utf8(body).unwrap()).as_bytes(),
        );
        let header = format!("t={t},v1={sig}");
        assert_eq!(stripe_check(&header, body, t), Ok(()));
        // Uppercase hex and a v0 entry.
        let header = format!("t={t},v1={},v0={}", sig.to_uppercase(), "ab".repeat(32));
        assert_eq!(stripe_check(&header, body, t), Ok(()));
        // Tampered body / timestamp.
        assert_eq!(
            stripe_check(&format!("t={t},v1={sig}"), b"{}", t),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            stripe_check(&format!("t={},v1={sig}", t + 1), body, t),
            Err(VerifyError::Mismatch)
        );
        // A v0 match alone does not count.
        assert!(matches!(
            stripe_check(&format!("t={t},v0={sig}"), body, t),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn stripe_multiple_v1() {
        let t = 1_700_000_000i64;
        let body = b"payload";
        let good = hex_hmac(ST_SECRET.as_bytes(), format!("{t}.payload").as_bytes());
        let old = hex_hmac(b"whsec_rolled_secret", format!("{t}.payload").as_bytes());
        assert_eq!(
            stripe_check(&format!("t={t},v1={old},v1={good}"), body, t),
            Ok(())
        );
        assert_eq!(
            stripe_check(&format!("t={t}, v1={good}, v1={old}"), body, t),
            Ok(())
        );
        assert_eq!(
            stripe_check(&format!("t={t},v1={old},v1=zz"), body, t),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn stripe_tolerance_both_ways() {
        let t = 1_700_000_000i64;
        let body = b"payload";
        let sig = hex_hmac(ST_SECRET.as_bytes(), format!("{t}.payload").as_bytes());
        let header = format!("t={t},v1={sig}");
        assert_eq!(stripe_check(&header, body, t + 300), Ok(()));
        assert_eq!(stripe_check(&header, body, t - 300), Ok(()));
        assert_eq!(
            stripe_check(&header, body, t + 301),
            Err(VerifyError::TimestampOutOfTolerance { age_secs: 301 })
        );
        assert_eq!(
            stripe_check(&header, body, t - 301),
            Err(VerifyError::TimestampOutOfTolerance { age_secs: -301 })
        );
    }

    #[test]
    fn stripe_malformed() {
        let sig = "ab".repeat(32);
        for header in [
            format!("v1={sig}"),
            "t=1700000000".to_string(),
            format!("t=soon,v1={sig}"),
            format!("t=1,t=2,v1={sig}"),
            "garbage".to_string(),
        ] {
            assert!(
                matches!(
                    stripe_check(&header, b"", 1),
                    Err(VerifyError::Malformed(_))
                ),
                "{header}"
            );
        }
    }

    // --- hmac-sha256 ------------------------------------------------------

    #[test]
    fn hmac_sha256_variants() {
        let secret = "s3cret";
        let body = b"raw body \x00\xff bytes";
        let sig = hex_hmac(secret.as_bytes(), body);
        let v = verify(Scheme::HmacSha256, "x-sig");
        let now = at(0);
        let ok = |value: &str| check(&v, secret, &[("x-sig", value)], body, now);
        assert_eq!(ok(&sig), Ok(()));
        assert_eq!(ok(&format!("sha256={sig}")), Ok(()));
        assert_eq!(ok(&sig.to_uppercase()), Ok(()));
        assert_eq!(ok(&format!("sha256={}", sig.to_uppercase())), Ok(()));
        assert_eq!(ok(&format!(" {sig} ")), Ok(()));
        // Wrong signature (well-formed) and malformed ones.
        assert_eq!(ok(&hex_hmac(b"other", body)), Err(VerifyError::Mismatch));
        assert!(matches!(ok(&sig[..62]), Err(VerifyError::Malformed(_))));
        assert!(matches!(ok("sha256=zz"), Err(VerifyError::Malformed(_))));
        assert!(matches!(ok(""), Err(VerifyError::Malformed(_))));
        // The header is the configured one.
        assert_eq!(
            check(&v, secret, &[("x-other", &sig)], body, now),
            Err(VerifyError::MissingHeader("x-sig".into()))
        );
        // An empty secret is refused rather than accepted.
        let empty_sig = hex_hmac(b"", body);
        assert!(matches!(
            check(&v, "", &[("x-sig", &empty_sig)], body, now),
            Err(VerifyError::BadSecret(_))
        ));
    }

    // --- messages ---------------------------------------------------------

    #[test]
    fn messages_never_contain_the_secret_or_signature() {
        let secret = "whsec_U3VwZXJTZWNyZXRWYWx1ZTQy";
        let key_b64 = "U3VwZXJTZWNyZXRWYWx1ZTQy";
        let body = b"body";
        let ts = 1_700_000_000;
        let good = standard_webhooks_sign(secret, "m", ts, body).unwrap();
        let expected_b64 = &good[3..];
        let expected_hex = hex_hmac(secret.as_bytes(), body);
        let t = ts.to_string();
        let mut errors = vec![
            sw_check(secret, "m", &t, &good, b"other", ts).unwrap_err(),
            sw_check(secret, "m", &t, &good, body, ts + 1000).unwrap_err(),
            sw_check(secret, "m", "x", &good, body, ts).unwrap_err(),
            sw_check(secret, "m", &t, "v1,%%%", body, ts).unwrap_err(),
            sw_check("whsec_***secret***", "m", &t, &good, body, ts).unwrap_err(),
        ];
        let v = verify(Scheme::HmacSha256, "x-sig");
        for value in [
            "00".repeat(32),
            "nothex".into(),
            format!("sha256={}", "0".repeat(10)),
        ] {
            errors.push(check(&v, secret, &[("x-sig", &value)], body, at(0)).unwrap_err());
        }
        errors.push(check(&v, secret, &[], body, at(0)).unwrap_err());
        errors.push(check(&v, "", &[("x-sig", "00")], body, at(0)).unwrap_err());
        errors.push(stripe_check("t=1,v1=00", body, 1).unwrap_err());
        for e in &errors {
            let text = e.to_string();
            for needle in [secret, key_b64, expected_b64, &expected_hex, "***secret***"] {
                assert!(!text.contains(needle), "{text:?} contains {needle:?}");
            }
        }
    }
}
