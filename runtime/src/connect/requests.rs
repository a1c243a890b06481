//! OAuth2 connection requests: the authorization code flow with PKCE.
//!
//! `POST /api/v1/connection-requests` makes a request and answers the
//! provider's authorization URL. Its `state` is `{request id}.{secret}`;
//! only the secret's SHA-256 is stored, with the PKCE verifier sealed. The
//! browser comes back to `GET /oauth2/callback`, which finds the request by
//! id, checks the secret, and uses the request once: a forged, replayed or
//! expired `state` is refused and nothing is connected. The code is
//! exchanged on weir's own client, and the tokens are sealed into the
//! connection like any credential.

use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;
use tracing::{info, warn};
use weir_storage::{
    Commit, ConnectionRecord, ConnectionRequestRecord, ConnectionState, RequestStatus, Write,
};

use super::connections::{ConnectError, Connections};
use super::integration::{AuthKind, SchemaError};
use super::oauth2::{self, ClientCredentials};
use super::vault::Binding;
use crate::daemon::notify::ConnectionEvent;

/// How long a request waits for the callback.
pub const REQUEST_TTL: Duration = Duration::minutes(10);

/// Where the outside world reaches weir, and where callers may send the
/// browser back to.
#[derive(Debug, Default)]
pub struct OAuthConfig {
    /// `--public-url`, or `http://` + the address weir listens on.
    pub public_url: OnceLock<String>,
    /// `--oauth-redirect-allow` prefixes.
    pub redirect_allow: OnceLock<Vec<String>>,
}

impl OAuthConfig {
    fn callback(&self) -> String {
        let base = self
            .public_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://127.0.0.1:8080");
        format!("{}/oauth2/callback", base.trim_end_matches('/'))
    }

    /// A caller's `redirect_uri` is allowed on the public URL's origin, on a
    /// loopback address, or under an allowed prefix (no open redirects).
    fn allows(&self, uri: &str) -> bool {
        let Ok(url) = reqwest::Url::parse(uri) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let host = url.host_str().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let same_origin = self
            .public_url
            .get()
            .and_then(|p| reqwest::Url::parse(p).ok())
            .is_some_and(|p| p.origin() == url.origin());
        let allowed = self
            .redirect_allow
            .get()
            .is_some_and(|prefixes| prefixes.iter().any(|p| uri.starts_with(p.as_str())));
        loopback || same_origin || allowed
    }
}

/// `POST /api/v1/connection-requests`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    /// The integration's key (an OAuth2 integration).
    pub integration: String,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Reconnects this connection (same id).
    pub connection_id: Option<String>,
    /// Where the browser goes when it is done (one of the allowed ones).
    pub redirect_uri: Option<String>,
}

/// What the callback ends with: where the browser goes, or the page it
/// shows.
pub enum Finish {
    Redirect(String),
    Page { status: u16, text: String },
}

fn state_hash(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Compares without an early exit (the hash of the `state` secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn invalid(pointer: &str, message: impl Into<String>) -> ConnectError {
    ConnectError::Invalid(vec![SchemaError::new(pointer, message)])
}

/// A connection request as the API shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RequestView {
    pub id: String,
    pub integration: String,
    pub status: RequestStatus,
    /// The connection it made (on `success`).
    pub connection_id: Option<String>,
    pub error: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// When it is made: where to send the person to consent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

pub fn view(r: &ConnectionRequestRecord) -> RequestView {
    let status = match r.status {
        RequestStatus::Pending if Utc::now() > r.expires_at => RequestStatus::Expired,
        s => s,
    };
    RequestView {
        id: r.id.clone(),
        integration: r.integration.clone(),
        status,
        connection_id: r.result.clone(),
        error: r.error.clone(),
        expires_at: r.expires_at,
        url: None,
    }
}

impl Connections {
    /// Where OAuth2 providers send the browser back: set once the daemon
    /// knows its address.
    pub fn set_public_url(&self, url: String, redirect_allow: Vec<String>) {
        let _ = self.oauth.public_url.set(url);
        let _ = self.oauth.redirect_allow.set(redirect_allow);
    }

    /// Starts an OAuth2 connection request: the provider's URL to send the
    /// person to.
    pub async fn start_request(
        &self,
        tenant: &str,
        body: RequestBody,
    ) -> Result<(ConnectionRequestRecord, String), ConnectError> {
        let Some(integration) = self.integrations.get(&body.integration) else {
            return Err(invalid(
                "/integration",
                format!("no integration `{}`", body.integration),
            ));
        };
        let AuthKind::OAuth2(o) = &integration.auth else {
            return Err(invalid(
                "/integration",
                format!(
                    "integration `{}` uses {} auth: create its connections with POST /api/v1/connections",
                    integration.key,
                    integration.auth.type_name()
                ),
            ));
        };
        let parameters = body.parameters.unwrap_or_else(|| json!({}));
        let mut errors = match &integration.parameters {
            Some(schema) => schema.check(&parameters, "/parameters"),
            None => Vec::new(),
        };
        if let Some(uri) = &body.redirect_uri
            && !self.oauth.allows(uri)
        {
            errors.push(SchemaError::new("/redirect_uri", "must be on weir's public URL, on a loopback address, or start with a prefix given by --oauth-redirect-allow"));
        }
        if let Some(id) = &body.connection_id {
            match self.store.connection(tenant, id)? {
                Some(c) if c.integration == integration.key => {}
                Some(_) => errors.push(SchemaError::new(
                    "/connection_id",
                    format!(
                        "connection {id} is not a connection to `{}`",
                        integration.key
                    ),
                )),
                None => return Err(ConnectError::NotFound(id.clone())),
            }
        }
        if !errors.is_empty() {
            return Err(ConnectError::Invalid(errors));
        }
        let vault = self.vault()?;
        let client = ClientCredentials::from_env(o).map_err(ConnectError::Configuration)?;
        let id = uuid::Uuid::now_v7().to_string();
        let secret = oauth2::random_token();
        let state = format!("{id}.{secret}");
        let start = oauth2::authorize_url(o, &client.id, &self.oauth.callback(), &state)
            .map_err(ConnectError::Configuration)?;
        let verifier = if o.pkce {
            let binding = Binding {
                tenant,
                connection: &id,
                field: "code_verifier",
            };
            Some(vault.seal(binding, &start.verifier)?)
        } else {
            None
        };
        let now = Utc::now();
        let record = ConnectionRequestRecord {
            id: id.clone(),
            tenant: tenant.to_owned(),
            integration: integration.key.clone(),
            parameters,
            connection_id: body.connection_id,
            redirect_uri: body.redirect_uri,
            status: RequestStatus::Pending,
            state_hash: state_hash(&secret),
            verifier,
            created_at: now,
            expires_at: now + REQUEST_TTL,
            error: None,
            result: None,
        };
        self.store
            .commit(Commit::new().with(Write::ConnectionRequest(record.clone())))
            .await?;
        Ok((record, start.url.to_string()))
    }

    pub fn request(&self, tenant: &str, id: &str) -> Result<ConnectionRequestRecord, ConnectError> {
        self.store
            .connection_request(id)?
            .filter(|r| r.tenant == tenant)
            .ok_or_else(|| ConnectError::NotFound(id.to_owned()))
    }

    /// `GET /oauth2/callback`: finishes the request `state` names, once.
    pub async fn callback(&self, query: &[(String, String)]) -> Finish {
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let refuse = |text: &str| Finish::Page {
            status: 400,
            text: text.to_owned(),
        };
        let Some((id, secret)) = get("state").and_then(|s| s.split_once('.')) else {
            return refuse("This link has no valid `state`: start connecting again from the app.");
        };
        let _lock = self.lock(id).await;
        let mut record = match self.store.connection_request(id) {
            Ok(Some(r)) if same(&r.state_hash, &state_hash(secret)) => r,
            Ok(_) => {
                warn!(request = %id, "OAuth2 callback with an unknown or forged state");
                return refuse("This link is not valid: start connecting again from the app.");
            }
            Err(e) => {
                warn!(error = %e, "cannot read a connection request");
                return refuse("weir cannot read this request now; try again.");
            }
        };
        if record.status != RequestStatus::Pending {
            return refuse("This link was used already: start connecting again from the app.");
        }
        let outcome = if Utc::now() > record.expires_at {
            record.status = RequestStatus::Expired;
            Err("the request expired (10 minutes); start connecting again".to_owned())
        } else if let Some(error) = get("error") {
            let description = get("error_description")
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            record.status = RequestStatus::Error;
            Err(format!("the provider answered {error}{description}"))
        } else {
            match get("code") {
                None => {
                    record.status = RequestStatus::Error;
                    Err("the provider sent no code".into())
                }
                Some(code) => self.finish(&record, code).await,
            }
        };
        match &outcome {
            Ok(connection) => {
                record.status = RequestStatus::Success;
                record.result = Some(connection.clone());
            }
            Err(e) => {
                if record.status == RequestStatus::Pending {
                    record.status = RequestStatus::Error;
                }
                record.error = Some(e.clone());
            }
        }
        // Used once: its verifier is dropped with its pending status.
        record.verifier = None;
        if let Err(e) = self
            .store
            .commit(Commit::new().with(Write::ConnectionRequest(record.clone())))
            .await
        {
            warn!(request = %id, error = %e, "cannot record the connection request's end");
        }
        match (&record.redirect_uri, outcome) {
            (Some(uri), Ok(connection)) => {
                Finish::Redirect(with_query(uri, "connection_id", &connection))
            }
            (Some(uri), Err(e)) => Finish::Redirect(with_query(uri, "error", &e)),
            (None, Ok(_)) => Finish::Page {
                status: 200,
                text: "Connected. You can close this window.".into(),
            },
            (None, Err(e)) => Finish::Page {
                status: 400,
                text: format!("Not connected: {e}."),
            },
        }
    }

    /// Exchanges the code and stores the tokens in a new connection, or in
    /// the one the request reconnects. Answers the connection's id.
    async fn finish(
        &self,
        request: &ConnectionRequestRecord,
        code: &str,
    ) -> Result<String, String> {
        let integration = self.integrations.get(&request.integration).ok_or_else(|| {
            format!(
                "the integration `{}` is not loaded any more",
                request.integration
            )
        })?;
        let AuthKind::OAuth2(o) = &integration.auth else {
            return Err(format!(
                "the integration `{}` no longer uses OAuth2",
                integration.key
            ));
        };
        let client = ClientCredentials::from_env(o)?;
        let vault = self.vault().map_err(|e| e.to_string())?;
        let verifier = match &request.verifier {
            Some(sealed) => Some(
                vault
                    .open(
                        Binding {
                            tenant: &request.tenant,
                            connection: &request.id,
                            field: "code_verifier",
                        },
                        sealed,
                    )
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let tokens = oauth2::exchange(o, &client, code, &self.oauth.callback(), verifier.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let now = Utc::now();
        let id = request
            .connection_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        // Read (for a reconnect) and written under the connection's lock.
        let lock = self.lock(&id).await;
        let (mut record, was) = match &request.connection_id {
            Some(id) => {
                let existing = self
                    .store
                    .connection(&request.tenant, id)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("connection {id} was deleted meanwhile"))?;
                let was = existing.state;
                (existing, Some(was))
            }
            None => (
                ConnectionRecord {
                    id: id.clone(),
                    tenant: request.tenant.clone(),
                    integration: integration.key.clone(),
                    name: integration
                        .name
                        .clone()
                        .unwrap_or_else(|| integration.key.clone()),
                    state: ConnectionState::Ready,
                    parameters: request.parameters.clone(),
                    credentials: Default::default(),
                    created_at: now,
                    updated_at: now,
                    last_used_at: None,
                    error: None,
                    credentials_expire_at: None,
                    credentials_granted_at: None,
                    overrides: Default::default(),
                },
                None,
            ),
        };
        record.credentials.clear();
        let mut put = |field: &str, value: &SecretString| -> Result<(), String> {
            let binding = Binding {
                tenant: &record.tenant,
                connection: &record.id,
                field,
            };
            let sealed = vault.seal(binding, value).map_err(|e| e.to_string())?;
            record.credentials.insert(field.to_owned(), sealed);
            Ok(())
        };
        put("access_token", &tokens.access_token)?;
        if let Some(refresh) = &tokens.refresh_token {
            put("refresh_token", refresh)?;
        }
        record.credentials_expire_at = tokens.expires_at;
        record.credentials_granted_at = Some(now);
        record.updated_at = now;
        let (state, error) = self.run_test(&integration, &record).await;
        record.state = state;
        record.error = error;
        self.save(&record).await.map_err(|e| e.to_string())?;
        drop(lock);
        if was.is_none() {
            self.note_added_or_removed();
        }
        info!(tenant = %record.tenant, connection = %record.id, integration = %record.integration, state = record.state.as_str(), "OAuth2 connection made");
        match was {
            None => self.notify(ConnectionEvent::Created, &record).await,
            Some(was) => self.moved(was, &record).await,
        }
        Ok(record.id)
    }
}

/// `uri` with `name=value` added to its query.
fn with_query(uri: &str, name: &str, value: &str) -> String {
    match reqwest::Url::parse(uri) {
        Ok(mut url) => {
            url.query_pairs_mut().append_pair(name, value);
            url.to_string()
        }
        Err(_) => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_the_public_origin_loopback_or_an_allowed_prefix() {
        let c = OAuthConfig::default();
        let _ = c.public_url.set("https://weir.example.com".into());
        let _ = c
            .redirect_allow
            .set(vec!["https://app.example.com/connected".into()]);
        for ok in [
            "https://weir.example.com/done",
            "http://127.0.0.1:3000/cb",
            "http://localhost/cb",
            "http://[::1]:9/x",
            "https://app.example.com/connected?x=1",
        ] {
            assert!(c.allows(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/cb",
            "https://weir.example.com.evil.example/",
            "https://app.example.com/other",
            "javascript:alert(1)",
            "not a url",
        ] {
            assert!(!c.allows(bad), "{bad}");
        }
    }

    #[test]
    fn the_state_secret_is_compared_in_full() {
        let h = state_hash("secret");
        assert!(same(&h, &state_hash("secret")));
        assert!(!same(&h, &state_hash("secreT")));
        assert!(!same(&h, &h[..10]));
    }
}
