//! Who calls the API: a bearer token becomes a [`Caller`] (a tenant, or an
//! admin of the workspace), and a caller with the tenant it acts for
//! becomes a [`Scope`], the only way handlers reach stored data.
//!
//! - `token`: the workspace, token verification and issuing
//! - `scope`: what a scope may read and change

pub mod scope;
pub mod token;

use axum::http::{HeaderMap, header};
use weir_nodes::reader::valid_id;

pub use scope::Scope;
pub use token::{Grant, TokenError, Workspace, WorkspaceError};

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// One tenant: sees and changes its own data only.
    Tenant(String),
    /// The whole workspace: every tenant, and may act as one.
    Admin,
}

/// How the API authenticates.
#[derive(Debug)]
pub enum Auth {
    /// No workspace secret (a laptop, listening on loopback only): every
    /// caller is an admin.
    Open,
    /// Bearer tokens signed with the workspace secret.
    Tokens(Workspace),
}

/// Why a request is not authenticated: answered 401.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// The header is there, the token is not valid.
    Invalid(TokenError),
    /// An `Authorization` header of another scheme.
    Scheme,
}

impl Refusal {
    pub fn message(&self) -> String {
        match self {
            Refusal::Missing => {
                "no token: send `Authorization: Bearer TOKEN` (`weir token` makes one)".into()
            }
            Refusal::Scheme => "the Authorization header must be `Bearer TOKEN`".into(),
            Refusal::Invalid(e) => e.to_string(),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750).
    pub fn challenge(&self) -> String {
        match self {
            Refusal::Missing => r#"Bearer realm="weir""#.into(),
            Refusal::Scheme | Refusal::Invalid(_) => format!(
                r#"Bearer realm="weir", error="invalid_token", error_description="{}""#,
                self.message().replace(['"', '\\'], "'")
            ),
        }
    }
}

impl Auth {
    /// The caller of a request, from its `Authorization` header; `now` in
    /// seconds since the epoch.
    pub fn caller(&self, headers: &HeaderMap, now: i64) -> Result<Caller, Refusal> {
        self.caller_with(headers, now, false)
    }

    /// [`Auth::caller`] for an endpoint whose tokens must name weir in
    /// `aud` (MCP, whose authorization rules require the audience check).
    pub fn audience_caller(&self, headers: &HeaderMap, now: i64) -> Result<Caller, Refusal> {
        self.caller_with(headers, now, true)
    }

    fn caller_with(
        &self,
        headers: &HeaderMap,
        now: i64,
        audience: bool,
    ) -> Result<Caller, Refusal> {
        let workspace = match self {
            Auth::Open => return Ok(Caller::Admin),
            Auth::Tokens(w) => w,
        };
        let value = headers.get(header::AUTHORIZATION).ok_or(Refusal::Missing)?;
        let value = value.to_str().map_err(|_| Refusal::Scheme)?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(Refusal::Scheme),
        };
        match audience {
            true => workspace.verify_audience(token, now),
            false => workspace.verify(token, now),
        }
        .map_err(Refusal::Invalid)
    }

    /// The caller a token (not a header) speaks for: the console's
    /// session cookie holds one.
    pub fn token_caller(&self, token: &str, now: i64) -> Result<Caller, Refusal> {
        match self {
            Auth::Open => Ok(Caller::Admin),
            Auth::Tokens(w) => w.verify(token, now).map_err(Refusal::Invalid),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Auth::Open)
    }
}

/// Why a caller may not act as the tenant it asked for: answered 403 or
/// 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScopeError {
    #[error("this token acts for tenant `{own}`; it cannot act for `{asked}`")]
    OtherTenant { own: String, asked: String },
    #[error("tenant `{0}` must match [a-z0-9_-]{{1,64}}")]
    BadTenant(String),
    #[error("only an admin token may do this")]
    AdminOnly,
}

impl Caller {
    /// The scope of a call that asks to act for `asked` (from `?tenant=`
    /// or `X-Weir-Tenant`, or a body's `tenant`): a tenant acts for itself
    /// only; an admin acts for the tenant it names, or for all.
    pub fn scope(&self, asked: Option<&str>) -> Result<Scope, ScopeError> {
        if let Some(t) = asked
            && !valid_id(t)
        {
            return Err(ScopeError::BadTenant(t.to_owned()));
        }
        match (self, asked) {
            (Caller::Tenant(own), Some(asked)) if own != asked => Err(ScopeError::OtherTenant {
                own: own.clone(),
                asked: asked.to_owned(),
            }),
            (Caller::Tenant(own), _) => Ok(Scope::Tenant(own.clone())),
            (Caller::Admin, Some(asked)) => Ok(Scope::Tenant(asked.to_owned())),
            (Caller::Admin, None) => Ok(Scope::All),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::time::Duration;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            value.parse().expect("a header value"),
        );
        h
    }

    #[test]
    fn the_header_is_read_as_rfc_6750_says() {
        let w = Workspace::new(
            "acme",
            &SecretString::from("a-workspace-secret-of-at-least-32-bytes"),
            Duration::from_secs(3600),
        )
        .expect("workspace");
        let grant = Grant {
            caller: Caller::Tenant("t1".into()),
            ttl: Duration::from_secs(60),
            name: None,
        };
        let now = 1_800_000_000;
        let token = w.issue(&grant, now).expect("issued");
        let auth = Auth::Tokens(w);
        assert_eq!(auth.caller(&HeaderMap::new(), now), Err(Refusal::Missing));
        assert_eq!(
            auth.caller(&headers("Basic abc"), now),
            Err(Refusal::Scheme)
        );
        assert_eq!(
            auth.caller(&headers(&format!("bearer {token}")), now),
            Ok(Caller::Tenant("t1".into()))
        );
        let expired = auth
            .caller(&headers(&format!("Bearer {token}")), now + 3600)
            .expect_err("expired");
        assert!(expired.challenge().contains(r#"error="invalid_token""#));
        assert!(expired.challenge().contains("expired"));
        assert_eq!(Refusal::Missing.challenge(), r#"Bearer realm="weir""#);
        assert_eq!(Auth::Open.caller(&HeaderMap::new(), now), Ok(Caller::Admin));
    }

    #[test]
    fn a_tenant_acts_for_itself_an_admin_for_anyone() {
        let t = Caller::Tenant("a".into());
        assert_eq!(t.scope(None), Ok(Scope::Tenant("a".into())));
        assert_eq!(t.scope(Some("a")), Ok(Scope::Tenant("a".into())));
        assert!(matches!(
            t.scope(Some("b")),
            Err(ScopeError::OtherTenant { .. })
        ));
        assert_eq!(Caller::Admin.scope(None), Ok(Scope::All));
        assert_eq!(
            Caller::Admin.scope(Some("b")),
            Ok(Scope::Tenant("b".into()))
        );
        assert!(matches!(
            Caller::Admin.scope(Some("B!")),
            Err(ScopeError::BadTenant(_))
        ));
    }
}
