//! Bearer tokens: JWTs signed with the workspace secret (HS256 or HS512).
//!
//! Claims: `iss` (the workspace key, required), `exp` (required; the
//! lifetime `exp − iat` at most the workspace's `max_ttl`), `nbf` and
//! `iat` (honoured with [`LEEWAY`]), `tenant` (alias `tenantKey`) or
//! `admin: true` (alias `isAdmin`), optional `name` and `aud` (which must
//! then contain [`AUDIENCE`]).

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use weir_nodes::reader::valid_id;

use super::Caller;

/// Seconds of clock difference forgiven on `exp`, `nbf` and `iat`.
pub const LEEWAY: i64 = 60;
/// The audience weir's tokens name (and require, when `aud` is present).
pub const AUDIENCE: &str = "weir";
/// The shortest workspace secret weir accepts (HS256 wants 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;

/// The workspace: its key (the tokens' `iss`) and the keys made from its
/// secret. The secret itself is not kept; `Debug` shows the key alone.
pub struct Workspace {
    key: String,
    max_ttl: Duration,
    decoding: DecodingKey,
    encoding: EncodingKey,
    /// Tokens verified before, with who they speak for and when they
    /// expire: a client sends the same token again and again, and a
    /// lookup costs less than a signature check. Only valid tokens are
    /// kept; their expiry is checked at every use.
    /// Verified tokens: who, until when, and whether `aud` names weir.
    verified: std::sync::Mutex<std::collections::HashMap<Box<str>, (Caller, i64, bool)>>,
}

/// The most tokens [`Workspace`] remembers; past it, it forgets them all.
const VERIFIED_CAPACITY: usize = 4096;

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("key", &self.key)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

/// Why a workspace cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("the workspace key `{0}` must match [a-z0-9_-]{{1,64}}")]
    Key(String),
    #[error(
        "the workspace secret is {0} bytes; use at least {MIN_SECRET_BYTES} random bytes (like `openssl rand -base64 48`)"
    )]
    Short(usize),
    #[error("the workspace secret cannot be used: {0}")]
    Unusable(String),
}

/// Why a token is refused: each says what is wrong, for the 401's message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a JWT ({0})")]
    Malformed(String),
    #[error("the token's `alg` is {0}; weir accepts HS256 and HS512")]
    Algorithm(String),
    #[error("the token's signature does not match this workspace's secret")]
    BadSignature,
    #[error("the token has no `iss`; it must name the workspace key")]
    NoIssuer,
    #[error("the token was issued for workspace `{found}`, not `{expected}`")]
    WrongIssuer { found: String, expected: String },
    #[error("the token has no `exp`; tokens must expire")]
    NoExpiry,
    #[error("the token expired {0} seconds ago")]
    Expired(i64),
    #[error("the token is not valid for another {0} seconds (`nbf`)")]
    NotYetValid(i64),
    #[error("the token was issued {0} seconds in the future (`iat`)")]
    IssuedInFuture(i64),
    #[error(
        "the token lives {lifetime} seconds; this workspace accepts at most {max} (--max-token-ttl)"
    )]
    TooLong { lifetime: i64, max: u64 },
    #[error("the token's `aud` does not contain `{AUDIENCE}`")]
    Audience,
    #[error("the token has no `aud`; this endpoint needs one that contains `{AUDIENCE}`")]
    NoAudience,
    #[error("the token has neither `tenant` nor `admin: true`")]
    NoRole,
    #[error("the token's tenant `{0}` must match [a-z0-9_-]{{1,64}}")]
    BadTenant(String),
    #[error("the token's `{0}` claim has the wrong type")]
    ClaimType(&'static str),
}

/// What `weir token` puts in a token.
#[derive(Debug, Clone)]
pub struct Grant {
    pub caller: Caller,
    pub ttl: Duration,
    pub name: Option<String>,
}

impl Workspace {
    pub fn new(
        key: &str,
        secret: &SecretString,
        max_ttl: Duration,
    ) -> Result<Self, WorkspaceError> {
        if !valid_id(key) {
            return Err(WorkspaceError::Key(key.to_owned()));
        }
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(WorkspaceError::Short(bytes.len()));
        }
        let unusable = |e: jsonwebtoken::errors::Error| WorkspaceError::Unusable(e.to_string());
        Ok(Self {
            key: key.to_owned(),
            max_ttl,
            decoding: DecodingKey::from_secret(bytes).map_err(unusable)?,
            encoding: EncodingKey::from_secret(bytes).map_err(unusable)?,
            verified: Default::default(),
        })
    }

    /// Checks a token at `now` (seconds since the epoch): who calls.
    pub fn verify(&self, token: &str, now: i64) -> Result<Caller, TokenError> {
        self.verify_all(token, now).map(|(caller, _)| caller)
    }

    /// [`Workspace::verify`] for an endpoint that requires the audience
    /// (MCP): a token without `aud` is refused too.
    pub fn verify_audience(&self, token: &str, now: i64) -> Result<Caller, TokenError> {
        match self.verify_all(token, now)? {
            (caller, true) => Ok(caller),
            (_, false) => Err(TokenError::NoAudience),
        }
    }

    fn verify_all(&self, token: &str, now: i64) -> Result<(Caller, bool), TokenError> {
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        if let Some((caller, exp, audience)) = known {
            if now > exp + LEEWAY {
                return Err(TokenError::Expired(now - exp));
            }
            return Ok((caller, audience));
        }
        let (caller, exp, audience) = self.check_token(token, now)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(token.into(), (caller.clone(), exp, audience));
        Ok((caller, audience))
    }

    /// Verifies the signature and every claim: who calls, and until when.
    fn check_token(&self, token: &str, now: i64) -> Result<(Caller, i64, bool), TokenError> {
        let alg = algorithm(token)?;
        let mut validation = Validation::new(alg);
        // weir checks the claims itself (below), with its own messages and
        // clock; the library checks the signature and `alg`.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed(e.to_string()),
            })?
            .claims;
        self.check(&claims, now)
    }

    fn check(
        &self,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Result<(Caller, i64, bool), TokenError> {
        match claims.get("iss") {
            None | Some(Value::Null) => return Err(TokenError::NoIssuer),
            Some(Value::String(iss)) if *iss == self.key => {}
            Some(Value::String(iss)) => {
                return Err(TokenError::WrongIssuer {
                    found: iss.clone(),
                    expected: self.key.clone(),
                });
            }
            Some(_) => return Err(TokenError::ClaimType("iss")),
        }
        let exp = time_claim(claims, "exp")?.ok_or(TokenError::NoExpiry)?;
        if now > exp + LEEWAY {
            return Err(TokenError::Expired(now - exp));
        }
        if let Some(nbf) = time_claim(claims, "nbf")?
            && nbf > now + LEEWAY
        {
            return Err(TokenError::NotYetValid(nbf - now));
        }
        let iat = time_claim(claims, "iat")?;
        if let Some(iat) = iat
            && iat > now + LEEWAY
        {
            return Err(TokenError::IssuedInFuture(iat - now));
        }
        let lifetime = exp - iat.unwrap_or(now).min(now);
        let max = self.max_ttl.as_secs();
        if lifetime > i64::try_from(max).unwrap_or(i64::MAX) {
            return Err(TokenError::TooLong { lifetime, max });
        }
        let audience = match claims.get("aud") {
            None | Some(Value::Null) => false,
            Some(Value::String(aud)) if aud == AUDIENCE => true,
            Some(Value::Array(auds)) if auds.iter().any(|a| a == AUDIENCE) => true,
            Some(Value::String(_) | Value::Array(_)) => return Err(TokenError::Audience),
            Some(_) => return Err(TokenError::ClaimType("aud")),
        };
        let admin = match claims.get("admin").or_else(|| claims.get("isAdmin")) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(TokenError::ClaimType("admin")),
        };
        if admin {
            return Ok((Caller::Admin, exp, audience));
        }
        match claims.get("tenant").or_else(|| claims.get("tenantKey")) {
            None | Some(Value::Null) => Err(TokenError::NoRole),
            Some(Value::String(t)) if valid_id(t) => Ok((Caller::Tenant(t.clone()), exp, audience)),
            Some(Value::String(t)) => Err(TokenError::BadTenant(t.clone())),
            Some(_) => Err(TokenError::ClaimType("tenant")),
        }
    }

    /// A token for `grant`, issued at `now` (seconds since the epoch).
    pub fn issue(&self, grant: &Grant, now: i64) -> Result<String, WorkspaceError> {
        let ttl = i64::try_from(grant.ttl.as_secs()).unwrap_or(i64::MAX);
        let mut claims = json!({
            "iss": self.key,
            "iat": now,
            "exp": now.saturating_add(ttl),
            "aud": [AUDIENCE],
        });
        match &grant.caller {
            Caller::Admin => claims["admin"] = json!(true),
            Caller::Tenant(t) => claims["tenant"] = json!(t),
        }
        if let Some(name) = &grant.name {
            claims["name"] = json!(name);
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| WorkspaceError::Unusable(e.to_string()))
    }
}

/// The token's `alg`, read from its header before anything else, so that
/// `none` or an asymmetric algorithm is named in the refusal.
fn algorithm(token: &str) -> Result<Algorithm, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "a JWT has three parts separated by dots".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("its header is not base64url".into()))?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("its header is not JSON".into()))?;
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => Ok(Algorithm::HS256),
        Some("HS512") => Ok(Algorithm::HS512),
        Some(other) => Err(TokenError::Algorithm(format!("`{other}`"))),
        None => Err(TokenError::Algorithm("missing".into())),
    }
}

/// A NumericDate claim (seconds; a fraction is cut off).
fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(TokenError::ClaimType(name)),
        Some(_) => Err(TokenError::ClaimType(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-workspace-secret-of-at-least-32-bytes";
    const NOW: i64 = 1_800_000_000;

    fn workspace() -> Workspace {
        Workspace::new(
            "acme",
            &SecretString::from(SECRET),
            Duration::from_secs(24 * 3600),
        )
        .expect("a valid workspace")
    }

    fn sign(claims: Value, alg: Algorithm, secret: &str) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("a key");
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("signed")
    }

    fn token(claims: Value) -> String {
        sign(claims, Algorithm::HS256, SECRET)
    }

    fn valid() -> Value {
        json!({"iss": "acme", "iat": NOW, "exp": NOW + 3600, "tenant": "t1"})
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().map(|m| m.remove(key));
        claims
    }

    fn refusal(token: &str) -> TokenError {
        workspace()
            .verify(token, NOW)
            .expect_err("the token is refused")
    }

    #[test]
    fn a_tenant_token_and_an_admin_token_are_accepted() {
        let w = workspace();
        assert_eq!(
            w.verify(&token(valid()), NOW),
            Ok(Caller::Tenant("t1".into()))
        );
        let admin = with(without(valid(), "tenant"), "admin", json!(true));
        assert_eq!(w.verify(&token(admin), NOW), Ok(Caller::Admin));
        // Membrane's spellings, HS512, a fractional exp, an audience list.
        let alias = json!({"iss": "acme", "exp": NOW as f64 + 10.5, "tenantKey": "t2", "aud": ["x", "weir"]});
        assert_eq!(
            w.verify(&sign(alias, Algorithm::HS512, SECRET), NOW),
            Ok(Caller::Tenant("t2".into()))
        );
        let alias = json!({"iss": "acme", "exp": NOW + 10, "isAdmin": true, "aud": "weir"});
        assert_eq!(w.verify(&token(alias), NOW), Ok(Caller::Admin));
    }

    #[test]
    fn issued_tokens_verify() {
        let w = workspace();
        for caller in [Caller::Admin, Caller::Tenant("t9".into())] {
            let grant = Grant {
                caller: caller.clone(),
                ttl: Duration::from_secs(3600),
                name: Some("ci".into()),
            };
            let t = w.issue(&grant, NOW).expect("issued");
            assert_eq!(w.verify(&t, NOW + 10), Ok(caller));
        }
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let cases: Vec<(String, TokenError, &str)> = vec![
            (
                token(with(valid(), "exp", json!(NOW - 61))),
                TokenError::Expired(61),
                "expired",
            ),
            (
                token(with(valid(), "iss", json!("other"))),
                TokenError::WrongIssuer {
                    found: "other".into(),
                    expected: "acme".into(),
                },
                "workspace `other`",
            ),
            (
                token(without(valid(), "iss")),
                TokenError::NoIssuer,
                "no `iss`",
            ),
            (
                sign(
                    valid(),
                    Algorithm::HS256,
                    "another-secret-of-at-least-32-bytes!!",
                ),
                TokenError::BadSignature,
                "signature",
            ),
            (
                token(with(valid(), "exp", json!(NOW + 25 * 3600))),
                TokenError::TooLong {
                    lifetime: 25 * 3600,
                    max: 24 * 3600,
                },
                "at most 86400",
            ),
            (
                token(without(valid(), "tenant")),
                TokenError::NoRole,
                "neither",
            ),
            (
                token(with(without(valid(), "tenant"), "admin", json!(false))),
                TokenError::NoRole,
                "neither",
            ),
            (
                token(with(valid(), "nbf", json!(NOW + 120))),
                TokenError::NotYetValid(120),
                "nbf",
            ),
            (
                token(with(valid(), "iat", json!(NOW + 120))),
                TokenError::IssuedInFuture(120),
                "iat",
            ),
            (
                token(without(valid(), "exp")),
                TokenError::NoExpiry,
                "no `exp`",
            ),
            (
                token(with(valid(), "aud", json!(["billing"]))),
                TokenError::Audience,
                "aud",
            ),
            (
                token(with(valid(), "tenant", json!("Bad Tenant"))),
                TokenError::BadTenant("Bad Tenant".into()),
                "[a-z0-9_-]",
            ),
            (
                token(with(valid(), "exp", json!("tomorrow"))),
                TokenError::ClaimType("exp"),
                "`exp`",
            ),
        ];
        for (t, expected, words) in cases {
            let got = refusal(&t);
            assert_eq!(got, expected);
            assert!(got.to_string().contains(words), "{got} names {words}");
        }
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let w = workspace();
        let t = token(valid());
        assert!(w.verify(&t, NOW).is_ok());
        assert!(w.verify(&t, NOW + 3600).is_ok(), "within the leeway");
        assert_eq!(w.verify(&t, NOW + 3661), Err(TokenError::Expired(61)));
        // A refused token is not remembered as valid.
        let forged = format!("{}.AAAA", t.rsplit_once('.').map_or("", |p| p.0));
        assert_eq!(w.verify(&forged, NOW), Err(TokenError::BadSignature));
        assert_eq!(w.verify(&forged, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn leeway_is_sixty_seconds() {
        let w = workspace();
        let t = token(with(valid(), "exp", json!(NOW - 60)));
        assert!(w.verify(&t, NOW).is_ok());
        let t = token(with(valid(), "nbf", json!(NOW + 60)));
        assert!(w.verify(&t, NOW).is_ok());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused_before_the_signature() {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = b64(valid());
        let none = format!("{}.{claims}.", b64(json!({"alg": "none", "typ": "JWT"})));
        assert_eq!(refusal(&none), TokenError::Algorithm("`none`".into()));
        let rs = format!("{}.{claims}.c2ln", b64(json!({"alg": "RS256"})));
        assert_eq!(refusal(&rs), TokenError::Algorithm("`RS256`".into()));
        let missing = format!("{}.{claims}.c2ln", b64(json!({"typ": "JWT"})));
        assert_eq!(refusal(&missing), TokenError::Algorithm("missing".into()));
        // A valid header and claims under another signature.
        let t = token(valid());
        let forged = format!("{}.{}", t.rsplit_once('.').map_or("", |p| p.0), "AAAA");
        assert_eq!(refusal(&forged), TokenError::BadSignature);
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30.e30",
            "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.AAAA",
        ] {
            match refusal(t) {
                TokenError::Malformed(_) | TokenError::Algorithm(_) | TokenError::BadSignature => {}
                other => panic!("{t}: {other}"),
            }
        }
    }

    #[test]
    fn a_short_secret_or_a_bad_key_is_refused() {
        let short = Workspace::new(
            "acme",
            &SecretString::from("short"),
            Duration::from_secs(60),
        );
        assert!(matches!(short, Err(WorkspaceError::Short(5))));
        let key = Workspace::new(
            "Acme!",
            &SecretString::from(SECRET),
            Duration::from_secs(60),
        );
        assert!(matches!(key, Err(WorkspaceError::Key(_))));
        let debug = format!("{:?}", workspace());
        assert!(!debug.contains(SECRET) && debug.contains("acme"), "{debug}");
    }
}
