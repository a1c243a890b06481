//! Connections: a tenant's authenticated link to one integration. Created
//! with credentials (API key, basic, bearer), which are sealed by the key
//! ring before they are stored; tested by the integration's `test`
//! request; never shown.
//!
//! Every call takes the tenant first: a connection is read by its tenant's
//! key, so one tenant cannot name another's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracing::{info, warn};
use weir_nodes::http_client;
use weir_storage::{ActionOverride, Commit, ConnectionRecord, ConnectionState, Store, Write};

use std::future::Future;
use std::pin::Pin;

use weir_nodes::NodeError;
use weir_nodes::functions::http::{Authorized, Connector, Request, Via};

use super::integration::{AuthKind, Integration, KeyPlace, SchemaError};
use super::oauth2::{self, ClientCredentials};
use super::vault::{Binding, KEYS_VAR, KeyRing, Sealed, VaultError};
use crate::daemon::notify::{ConnectionEvent, Notifier};
use crate::daemon::registry::Registry;

/// How long a test request may take.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no connection {0}")]
    NotFound(String),
    /// The request body does not hold what it should: each problem with
    /// its JSON pointer.
    #[error("{}", describe(.0))]
    Invalid(Vec<SchemaError>),
    #[error(
        "no key ring is configured, so credentials cannot be stored encrypted: set {KEYS_VAR} to `kid:base64key` (a key: `openssl rand -base64 32`) or pass --secret-keys-file"
    )]
    NoKeys,
    #[error(
        "integration '{0}' uses OAuth2: its credentials come from the provider; start with POST /api/v1/connection-requests"
    )]
    OAuth2(String),
    #[error("a stored credential cannot be opened: {0}")]
    Vault(#[from] VaultError),
    /// weir is not configured for this (an OAuth2 client's variables).
    #[error("{0}")]
    Configuration(String),
    #[error(transparent)]
    Storage(#[from] weir_storage::Error),
}

fn describe(errors: &[SchemaError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.pointer, e.message))
        .collect();
    format!("the request is not valid: {}", parts.join("; "))
}

fn invalid(pointer: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::new(pointer, message)
}

/// `POST /api/v1/connections`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The integration's key.
    pub integration: String,
    /// A name for people (default: the integration's name).
    pub name: Option<String>,
    /// As the integration's `parameters` schema says.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// The credential fields of the integration's auth type (strings);
    /// stored encrypted, never shown again.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Value>,
}

/// `PATCH /api/v1/connections/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    pub name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// New credentials: the connection is tested with them.
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Value>,
}

/// List filters.
#[derive(Debug, Default)]
pub struct Filter {
    pub integration: Option<String>,
    pub state: Option<ConnectionState>,
}

impl Filter {
    pub fn keeps(&self, c: &ConnectionRecord) -> bool {
        self.integration
            .as_ref()
            .is_none_or(|i| *i == c.integration)
            && self.state.is_none_or(|s| s == c.state)
    }
}

pub struct Connections {
    pub(super) store: Arc<dyn Store>,
    pub(super) integrations: Arc<Registry<Integration>>,
    pub(super) vault: Option<Arc<KeyRing>>,
    /// How the outside world reaches weir (for OAuth2 redirects) and the
    /// redirect URIs callers may name.
    pub(super) oauth: super::requests::OAuthConfig,
    /// Where `connection.*` notifications go (the daemon sets it).
    notifier: std::sync::OnceLock<Arc<Notifier>>,
    /// One lock per connection: every change of a connection reads,
    /// changes and writes it under it, so two changes (new credentials
    /// while a run's 401 disconnects it) never overwrite each other.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// When each connection's `last_used_at` was last written (it is
    /// written at most once a minute).
    used: std::sync::Mutex<HashMap<String, chrono::DateTime<Utc>>>,
    /// When a connection's last token refresh failed for an outage.
    refresh_failed: std::sync::Mutex<HashMap<String, chrono::DateTime<Utc>>>,
    /// Counts up when a connection is created or removed (flows that run
    /// per connection start and stop their triggers on it).
    added_or_removed: tokio::sync::watch::Sender<u64>,
}

/// After a refresh that failed for an outage, the next waits this long.
const REFRESH_BACKOFF: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// How often `last_used_at` is written at most.
const USED_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

impl Connections {
    pub fn new(
        store: Arc<dyn Store>,
        integrations: Arc<Registry<Integration>>,
        vault: Option<Arc<KeyRing>>,
    ) -> Self {
        Self {
            store,
            integrations,
            vault,
            notifier: std::sync::OnceLock::new(),
            oauth: Default::default(),
            locks: Default::default(),
            used: Default::default(),
            refresh_failed: Default::default(),
            added_or_removed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes each time a connection is created or removed (a tenant
    /// erased removes its connections too).
    pub fn added_or_removed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.added_or_removed.subscribe()
    }

    /// Tells the watchers of [`Connections::added_or_removed`].
    pub fn note_added_or_removed(&self) {
        self.added_or_removed.send_modify(|n| *n += 1);
    }

    /// Holds the connection's lock until dropped.
    pub(super) async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Notes that a run used the connection: `last_used_at`, written at
    /// most once a minute.
    async fn used(&self, tenant: &str, id: &str) {
        let now = Utc::now();
        {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            if used.get(id).is_some_and(|at| now - *at < USED_EVERY) {
                return;
            }
            used.insert(id.to_owned(), now);
        }
        let _lock = self.lock(id).await;
        if let Ok(mut record) = self.get(tenant, id) {
            record.last_used_at = Some(now);
            if let Err(e) = self.save(&record).await {
                warn!(connection = %id, error = %e, "cannot record the connection's last use");
            }
        }
    }

    pub fn set_notifier(&self, notifier: Arc<Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    pub(super) async fn notify(&self, event: ConnectionEvent, record: &ConnectionRecord) {
        if let Some(n) = self.notifier.get() {
            n.connection(event, record).await;
        }
    }

    /// Notifies a change of state: disconnected, or ready again after it
    /// was disconnected (new credentials).
    pub(super) async fn moved(&self, was: ConnectionState, record: &ConnectionRecord) {
        match (was, record.state) {
            (w, ConnectionState::Disconnected) if w != ConnectionState::Disconnected => {
                self.notify(ConnectionEvent::Disconnected, record).await;
            }
            (ConnectionState::Disconnected, ConnectionState::Ready) => {
                info!(tenant = %record.tenant, connection = %record.id, "connection reconnected");
                self.notify(ConnectionEvent::Reconnected, record).await;
            }
            _ => {}
        }
    }

    pub fn integrations(&self) -> &Arc<Registry<Integration>> {
        &self.integrations
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(super) fn vault(&self) -> Result<&KeyRing, ConnectError> {
        self.vault.as_deref().ok_or(ConnectError::NoKeys)
    }

    pub async fn create(
        &self,
        tenant: &str,
        body: CreateBody,
    ) -> Result<ConnectionRecord, ConnectError> {
        let Some(integration) = self.integrations.get(&body.integration) else {
            let known: Vec<String> = self
                .integrations
                .all()
                .iter()
                .map(|i| i.key.clone())
                .collect();
            return Err(ConnectError::Invalid(vec![invalid(
                "/integration",
                format!(
                    "no integration `{}`; the integrations are: {}",
                    body.integration,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            )]));
        };
        if let AuthKind::OAuth2(_) = integration.auth {
            return Err(ConnectError::OAuth2(integration.key.clone()));
        }
        let parameters = body.parameters.unwrap_or_else(|| json!({}));
        let mut errors = check_parameters(&integration, &parameters);
        let credentials = check_credentials(&integration, body.credentials.as_ref(), &mut errors);
        if !errors.is_empty() {
            return Err(ConnectError::Invalid(errors));
        }
        let vault = self.vault()?;
        let now = Utc::now();
        let id = uuid::Uuid::now_v7().to_string();
        let mut record = ConnectionRecord {
            id: id.clone(),
            tenant: tenant.to_owned(),
            integration: integration.key.clone(),
            name: body.name.unwrap_or_else(|| {
                integration
                    .name
                    .clone()
                    .unwrap_or_else(|| integration.key.clone())
            }),
            state: ConnectionState::Ready,
            parameters,
            credentials: BTreeMap::new(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
            error: None,
            credentials_expire_at: None,
            credentials_granted_at: None,
            overrides: Default::default(),
        };
        seal_all(vault, &mut record, &credentials)?;
        let (state, error) = self.run_test(&integration, &record).await;
        record.state = state;
        record.error = error;
        self.save(&record).await?;
        self.note_added_or_removed();
        info!(tenant, connection = %record.id, integration = %record.integration, state = record.state.as_str(), "connection created");
        self.notify(ConnectionEvent::Created, &record).await;
        Ok(record)
    }

    pub fn get(&self, tenant: &str, id: &str) -> Result<ConnectionRecord, ConnectError> {
        self.store
            .connection(tenant, id)?
            .ok_or_else(|| ConnectError::NotFound(id.to_owned()))
    }

    pub fn list(
        &self,
        tenant: &str,
        filter: &Filter,
    ) -> Result<Vec<ConnectionRecord>, ConnectError> {
        Ok(self
            .store
            .connections(tenant)?
            .into_iter()
            .filter(|c| filter.keeps(c))
            .collect())
    }

    /// Changes the name, the parameters or the credentials; new
    /// credentials reconnect it (same id) and it is tested again.
    pub async fn update(
        &self,
        tenant: &str,
        id: &str,
        body: PatchBody,
    ) -> Result<ConnectionRecord, ConnectError> {
        let _lock = self.lock(id).await;
        let mut record = self.get(tenant, id)?;
        let integration = self.integration_of(&record)?;
        let mut errors = Vec::new();
        if let Some(parameters) = &body.parameters {
            errors.extend(check_parameters(&integration, parameters));
        }
        let credentials = match &body.credentials {
            Some(_) if matches!(integration.auth, AuthKind::OAuth2(_)) => {
                return Err(ConnectError::OAuth2(integration.key.clone()));
            }
            Some(c) => Some(check_credentials(&integration, Some(c), &mut errors)),
            None => None,
        };
        if !errors.is_empty() {
            return Err(ConnectError::Invalid(errors));
        }
        let retest = body.parameters.is_some() || credentials.is_some();
        if let Some(name) = body.name {
            record.name = name;
        }
        if let Some(parameters) = body.parameters {
            record.parameters = parameters;
        }
        if let Some(credentials) = credentials {
            record.credentials.clear();
            seal_all(self.vault()?, &mut record, &credentials)?;
        }
        record.updated_at = Utc::now();
        let was = record.state;
        if retest {
            let (state, error) = self.run_test(&integration, &record).await;
            record.state = state;
            record.error = error;
        }
        self.save(&record).await?;
        self.moved(was, &record).await;
        Ok(record)
    }

    /// Sets the connection's override of action `key`, or with `None`
    /// removes it; the record is read and written under the connection's
    /// lock. The override as it was, if there was one.
    pub async fn set_override(
        &self,
        tenant: &str,
        id: &str,
        key: &str,
        to: Option<ActionOverride>,
    ) -> Result<Option<ActionOverride>, ConnectError> {
        let _lock = self.lock(id).await;
        let mut record = self.get(tenant, id)?;
        let was = match to {
            Some(o) => record.overrides.insert(key.to_owned(), o),
            None => record.overrides.remove(key),
        };
        if was.is_some() || record.overrides.contains_key(key) {
            self.save(&record).await?;
        }
        Ok(was)
    }

    /// Runs the integration's test request; the state follows its answer.
    pub async fn test(&self, tenant: &str, id: &str) -> Result<ConnectionRecord, ConnectError> {
        let _lock = self.lock(id).await;
        let mut record = self.get(tenant, id)?;
        let integration = self.integration_of(&record)?;
        let was = record.state;
        let (state, error) = self.run_test(&integration, &record).await;
        record.state = state;
        record.error = error;
        record.updated_at = Utc::now();
        self.save(&record).await?;
        self.moved(was, &record).await;
        Ok(record)
    }

    pub async fn delete(&self, tenant: &str, id: &str) -> Result<ConnectionRecord, ConnectError> {
        let _lock = self.lock(id).await;
        let record = self.get(tenant, id)?;
        self.store
            .commit(Commit::new().with(Write::RemoveConnection {
                tenant: tenant.to_owned(),
                id: id.to_owned(),
            }))
            .await?;
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.note_added_or_removed();
        info!(tenant, connection = %id, "connection deleted");
        self.notify(ConnectionEvent::Deleted, &record).await;
        Ok(record)
    }

    pub(super) fn integration_of(
        &self,
        record: &ConnectionRecord,
    ) -> Result<Arc<Integration>, ConnectError> {
        self.integrations.get(&record.integration).ok_or_else(|| {
            ConnectError::Invalid(vec![invalid(
                "/integration",
                format!(
                    "the connection's integration `{}` is not loaded (its file is gone or does not load)",
                    record.integration
                ),
            )])
        })
    }

    pub(super) async fn save(&self, record: &ConnectionRecord) -> Result<(), ConnectError> {
        self.store
            .commit(Commit::new().with(Write::Connection(record.clone())))
            .await?;
        Ok(())
    }

    /// The credentials of a connection, opened.
    fn open_all(
        &self,
        record: &ConnectionRecord,
    ) -> Result<BTreeMap<String, SecretString>, ConnectError> {
        let vault = self.vault()?;
        record
            .credentials
            .iter()
            .map(|(field, sealed)| {
                let binding = Binding {
                    tenant: &record.tenant,
                    connection: &record.id,
                    field,
                };
                Ok((field.clone(), vault.open(binding, sealed)?))
            })
            .collect()
    }

    /// The app's URL for `path` (and query) through the connection —
    /// joined to the integration's `base_url` — and the headers that carry
    /// its credentials (marked sensitive), as the integration declares;
    /// and the credential values (4 characters or more) to take out of
    /// what the app answers.
    pub fn authorize_path(
        &self,
        integration: &Integration,
        record: &ConnectionRecord,
        path: &str,
    ) -> Result<Authorization, String> {
        use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
        let mut scope = rhai::Scope::new();
        scope.push_constant_dynamic(
            "connection",
            weir_nodes::script::to_dynamic(&scope_value(record)),
        );
        let base = integration
            .base_url
            .render(&mut scope, Some(Duration::from_secs(1)))
            .map_err(|e| format!("`base_url`: {}", e.message))?;
        let url = join(&base, path);
        let mut url = http_client::check_url(&url)
            .map_err(|e| format!("the URL {}: {e}", http_client::shown_text(&url)))?;
        let credentials = self.open_all(record).map_err(|e| e.to_string())?;
        let field = |name: &str| {
            credentials
                .get(name)
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default()
        };
        let mut headers = HeaderMap::new();
        let mut put = |name: HeaderName, value: String| -> Result<(), String> {
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                format!(
                    "a credential of connection {} cannot be sent in a header",
                    record.id
                )
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
            Ok(())
        };
        match &integration.auth {
            AuthKind::ApiKey {
                place: KeyPlace::Query,
                name,
            } => {
                url.query_pairs_mut().append_pair(name, &field("api_key"));
            }
            AuthKind::ApiKey {
                place: KeyPlace::Header,
                name,
            } => {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a header name"))?;
                put(name, field("api_key"))?;
            }
            AuthKind::Basic => {
                use base64::Engine as _;
                let pair = format!("{}:{}", field("username"), field("password"));
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                put(AUTHORIZATION, format!("Basic {encoded}"))?;
            }
            AuthKind::Bearer => put(AUTHORIZATION, format!("Bearer {}", field("token")))?,
            AuthKind::OAuth2(_) => put(AUTHORIZATION, format!("Bearer {}", field("access_token")))?,
            AuthKind::None => {}
        }
        let echoes = credentials
            .values()
            .map(|s| s.expose_secret().to_owned())
            .filter(|s| s.len() >= 4)
            .collect();
        Ok((url, headers, echoes))
    }

    /// The connection an `http` node names: by id, or the tenant's only
    /// one of the integration. A disconnected one is refused, saying to
    /// reconnect it.
    fn pick(&self, tenant: &str, via: &Via) -> Result<ConnectionRecord, String> {
        let record = match &via.id {
            Some(id) => self
                .store
                .connection(tenant, id)
                .map_err(|e| e.to_string())?
                .filter(|c| c.integration == via.integration)
                .ok_or_else(|| {
                    format!(
                        "tenant `{tenant}` has no connection {id} to `{}`",
                        via.integration
                    )
                })?,
            None => {
                let mut all: Vec<ConnectionRecord> = self
                    .store
                    .connections(tenant)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|c| c.integration == via.integration)
                    .collect();
                match all.len() {
                    0 => {
                        return Err(format!(
                            "tenant `{tenant}` has no connection to `{}`; create one (POST /api/v1/connections)",
                            via.integration
                        ));
                    }
                    1 => all.remove(0),
                    n => {
                        let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
                        return Err(format!(
                            "tenant `{tenant}` has {n} connections to `{}` ({}); pick one with `connection_id:`",
                            via.integration,
                            ids.join(", ")
                        ));
                    }
                }
            }
        };
        if record.state == ConnectionState::Disconnected {
            return Err(format!(
                "connection {} ({}) is disconnected{}; reconnect it (PATCH its credentials)",
                record.id,
                record.integration,
                record
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        Ok(record)
    }

    /// An OAuth2 connection with a token that is not due: refreshed first
    /// if it is (less than 60 s or 10 % of its lifetime left).
    async fn fresh(
        &self,
        integration: &Integration,
        record: ConnectionRecord,
    ) -> Result<ConnectionRecord, NodeError> {
        if !matches!(integration.auth, AuthKind::OAuth2(_)) {
            return Ok(record);
        }
        let granted = record.credentials_granted_at.unwrap_or(record.updated_at);
        if !oauth2::due(granted, record.credentials_expire_at, Utc::now()) {
            return Ok(record);
        }
        let seen = record.credentials.get("access_token").cloned();
        self.refresh_token(integration, &record.tenant, &record.id, seen.as_ref())
            .await
    }

    /// Refreshes an OAuth2 connection's token, one refresh per connection
    /// at a time: under the connection's lock it is read again, and
    /// refreshed only if its access token is still `seen` (a caller that
    /// waited for another's refresh uses its result). A rotated refresh
    /// token is on disk before the new access token is used. `invalid_grant`
    /// and the like disconnect it; an outage leaves it as it is, and after
    /// a failed attempt the next waits 30 s.
    pub async fn refresh_token(
        &self,
        integration: &Integration,
        tenant: &str,
        id: &str,
        seen: Option<&Sealed>,
    ) -> Result<ConnectionRecord, NodeError> {
        let AuthKind::OAuth2(o) = &integration.auth else {
            return Err(NodeError::Invalid(format!(
                "connection {id} uses {} auth: it has no token to refresh",
                integration.auth.type_name()
            )));
        };
        let lock = self.lock(id).await;
        let mut record = self
            .get(tenant, id)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        if seen.is_some() && record.credentials.get("access_token") != seen {
            return Ok(record);
        }
        if record.state == ConnectionState::Disconnected {
            return Err(NodeError::Invalid(format!(
                "connection {id} ({}) is disconnected{}; reconnect it",
                record.integration,
                record
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )));
        }
        let now = Utc::now();
        let outage = |why: String| {
            NodeError::Http(weir_nodes::functions::http::HttpError::Connect {
                method: reqwest::Method::POST,
                url: http_client::shown_text(&o.token_url),
                reason: why,
            })
        };
        let last = self
            .refresh_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied();
        if let Some(at) = last
            && now - at < REFRESH_BACKOFF
        {
            return Err(outage(format!(
                "the token of connection {id} could not be refreshed {}s ago; the next try is after {}s",
                (now - at).num_seconds(),
                REFRESH_BACKOFF.num_seconds()
            )));
        }
        let client = ClientCredentials::from_env(o).map_err(NodeError::Invalid)?;
        let vault = self
            .vault()
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let binding = |field: &'static str| Binding {
            tenant,
            connection: id,
            field,
        };
        let Some(sealed) = record.credentials.get("refresh_token").cloned() else {
            let why =
                "its access token is due and the provider gave no refresh token; reconnect it";
            return Err(self.refresh_refused(&mut record, why, lock).await);
        };
        let refresh = vault
            .open(binding("refresh_token"), &sealed)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        crate::metrics::token_refresh();
        match oauth2::refresh(o, &client, &refresh).await {
            Ok(tokens) => {
                let seal = |field: &'static str, value: &SecretString| {
                    vault
                        .seal(binding(field), value)
                        .map_err(|e| NodeError::Invalid(e.to_string()))
                };
                record.credentials.insert(
                    "access_token".into(),
                    seal("access_token", &tokens.access_token)?,
                );
                if let Some(rotated) = &tokens.refresh_token {
                    record
                        .credentials
                        .insert("refresh_token".into(), seal("refresh_token", rotated)?);
                }
                let was = record.state;
                record.credentials_expire_at = tokens.expires_at;
                record.credentials_granted_at = Some(now);
                record.updated_at = now;
                record.state = ConnectionState::Ready;
                record.error = None;
                // On disk before the new token (and a rotated refresh
                // token) is used.
                self.save(&record)
                    .await
                    .map_err(|e| NodeError::Invalid(e.to_string()))?;
                self.refresh_failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                drop(lock);
                info!(tenant, connection = %id, "OAuth2 token refreshed");
                self.moved(was, &record).await;
                Ok(record)
            }
            Err(e) if e.disconnects() => {
                let why = format!("refreshing its token: {e}; reconnect it");
                Err(self.refresh_refused(&mut record, &why, lock).await)
            }
            Err(e) => {
                self.refresh_failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_owned(), now);
                warn!(tenant, connection = %id, error = %e, "OAuth2 token refresh failed; tried again in 30 s at the earliest");
                Err(outage(e.to_string()))
            }
        }
    }

    /// The provider refused the refresh: the connection is disconnected
    /// (saved, notified); the node's error names it.
    async fn refresh_refused(
        &self,
        record: &mut ConnectionRecord,
        why: &str,
        lock: tokio::sync::OwnedMutexGuard<()>,
    ) -> NodeError {
        record.state = ConnectionState::Disconnected;
        record.error = Some(why.to_owned());
        record.updated_at = Utc::now();
        if let Err(e) = self.save(record).await {
            warn!(connection = %record.id, error = %e, "cannot record the connection's state");
        }
        drop(lock);
        warn!(tenant = %record.tenant, connection = %record.id, why, "connection disconnected");
        self.notify(ConnectionEvent::Disconnected, record).await;
        NodeError::Invalid(format!(
            "connection {} ({}) is disconnected: {why}",
            record.id, record.integration
        ))
    }

    /// Marks a connection disconnected: the app refused its credentials.
    pub async fn disconnect(&self, tenant: &str, id: &str, why: &str) -> Result<(), ConnectError> {
        let _lock = self.lock(id).await;
        let mut record = self.get(tenant, id)?;
        if record.state == ConnectionState::Disconnected {
            return Ok(());
        }
        record.state = ConnectionState::Disconnected;
        record.error = Some(why.to_owned());
        record.updated_at = Utc::now();
        self.save(&record).await?;
        self.notify(ConnectionEvent::Disconnected, &record).await;
        warn!(tenant, connection = %id, integration = %record.integration, "connection disconnected: the app refused its credentials");
        Ok(())
    }

    pub(super) async fn run_test(
        &self,
        integration: &Integration,
        record: &ConnectionRecord,
    ) -> (ConnectionState, Option<String>) {
        let Some(test) = &integration.test else {
            return (ConnectionState::Ready, None);
        };
        let mut scope = rhai::Scope::new();
        scope.push_constant_dynamic(
            "connection",
            weir_nodes::script::to_dynamic(&scope_value(record)),
        );
        let path = match test.path.render(&mut scope, Some(Duration::from_secs(1))) {
            Ok(p) => p,
            Err(e) => {
                return (
                    ConnectionState::Error,
                    Some(format!("the test request's path: {}", e.message)),
                );
            }
        };
        let (url, headers, _) = match self.authorize_path(integration, record, &path) {
            Ok(r) => r,
            Err(e) => {
                return (
                    ConnectionState::Error,
                    Some(format!("the test request cannot be made: {e}")),
                );
            }
        };
        let shown = format!("{} {}", test.method, http_client::shown(&url));
        let request = http_client::client()
            .request(test.method.clone(), url)
            .headers(headers);
        match request.timeout(TEST_TIMEOUT).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match status {
                    200..=299 => (ConnectionState::Ready, None),
                    401 | 403 => (
                        ConnectionState::Disconnected,
                        Some(format!(
                            "the test request {shown} was answered {status}: the app does not accept these credentials; reconnect with new ones (PATCH the connection's credentials)"
                        )),
                    ),
                    _ => (
                        ConnectionState::Error,
                        Some(format!("the test request {shown} was answered {status}")),
                    ),
                }
            }
            Err(e) => {
                let (_, why) = http_client::describe(e);
                warn!(connection = %record.id, request = %shown, error = %why, "connection test failed");
                (
                    ConnectionState::Error,
                    Some(format!("the test request {shown} failed: {why}")),
                )
            }
        }
    }

    /// Checks at start that the key ring opens the stored credentials: an
    /// error names the key id that is missing, or the one that does not
    /// open them.
    pub fn check_keys(&self) -> Result<usize, String> {
        let connections = self.store.all_connections().map_err(|e| e.to_string())?;
        let sealed: Vec<&ConnectionRecord> = connections
            .iter()
            .filter(|c| !c.credentials.is_empty())
            .collect();
        let Some(first) = sealed.first() else {
            return Ok(0);
        };
        let Some(vault) = &self.vault else {
            let kid = first
                .credentials
                .values()
                .next()
                .map_or("", |s| s.kid.as_str());
            return Err(format!(
                "the data folder holds encrypted credentials of {} connection(s) and no key ring is configured; set {KEYS_VAR} with the key `{kid}` (or --secret-keys-file)",
                sealed.len()
            ));
        };
        for c in &sealed {
            for (field, s) in &c.credentials {
                let binding = Binding {
                    tenant: &c.tenant,
                    connection: &c.id,
                    field,
                };
                if let Err(e) = vault.open(binding, s) {
                    return Err(format!(
                        "the key ring cannot open the stored credentials of connection {}: {e}",
                        c.id
                    ));
                }
            }
        }
        Ok(sealed.len())
    }

    /// `weir secrets rotate`: every credential not sealed with the first
    /// key is sealed again with it; answers how many fields changed.
    pub async fn rotate(&self) -> Result<usize, ConnectError> {
        let vault = self.vault()?;
        let mut changed = 0;
        let mut commit = Commit::new();
        for mut c in self.store.all_connections()? {
            let mut touched = false;
            let (tenant, id) = (c.tenant.clone(), c.id.clone());
            for (field, sealed) in c.credentials.iter_mut() {
                let binding = Binding {
                    tenant: &tenant,
                    connection: &id,
                    field,
                };
                if let Some(new) = vault.reseal(binding, sealed)? {
                    *sealed = new;
                    touched = true;
                    changed += 1;
                }
            }
            if touched {
                commit.push(Write::Connection(c));
            }
        }
        if !commit.is_empty() {
            self.store.commit(commit).await?;
        }
        Ok(changed)
    }
}

impl Connector for Connections {
    fn authorize<'a>(
        &'a self,
        tenant: &'a str,
        via: &'a Via,
        request: &'a Request,
    ) -> Pin<Box<dyn Future<Output = Result<Authorized, NodeError>> + Send + 'a>> {
        Box::pin(async move {
            let integration = self.integrations.get(&via.integration).ok_or_else(|| {
                NodeError::Invalid(format!(
                    "no integration `{}` is loaded (see the integrations folder)",
                    via.integration
                ))
            })?;
            let record = self.pick(tenant, via).map_err(NodeError::Invalid)?;
            let record = self.fresh(&integration, record).await?;
            let (url, headers, echoes) = self
                .authorize_path(&integration, &record, &request.path_and_query())
                .map_err(|e| NodeError::Invalid(format!("connection {}: {e}", record.id)))?;
            self.used(tenant, &record.id).await;
            Ok(Authorized {
                echoes,
                connection: record.id,
                url,
                headers,
            })
        })
    }

    fn rejected<'a>(
        &'a self,
        tenant: &'a str,
        request: &'a Request,
        authorized: &'a Authorized,
        why: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Authorized, String>> + Send + 'a>> {
        Box::pin(async move {
            let id = authorized.connection.as_str();
            let current = self.get(tenant, id).ok();
            let integration = current
                .as_ref()
                .and_then(|c| self.integrations.get(&c.integration));
            match integration {
                Some(integration) if matches!(integration.auth, AuthKind::OAuth2(_)) => {
                    let seen = current.and_then(|c| c.credentials.get("access_token").cloned());
                    let record = self
                        .refresh_token(&integration, tenant, id, seen.as_ref())
                        .await
                        .map_err(|e| e.to_string())?;
                    let (url, headers, echoes) = self
                        .authorize_path(&integration, &record, &request.path_and_query())
                        .map_err(|e| format!("connection {id}: {e}"))?;
                    Ok(Authorized {
                        echoes,
                        connection: record.id,
                        url,
                        headers,
                    })
                }
                _ => Err(match self.disconnect(tenant, id, why).await {
                    Ok(()) => format!(
                        "connection {id} is now disconnected: the app refused its credentials; reconnect it (PATCH its credentials)"
                    ),
                    Err(e) => format!("connection {id} could not be marked disconnected: {e}"),
                }),
            }
        })
    }
}

/// A request's way through a connection: the app's URL, the headers with
/// the credentials, and the credential values to redact from its answer.
pub type Authorization = (reqwest::Url, reqwest::header::HeaderMap, Vec<String>);

/// `connection` as templates see it (no credentials).
pub fn scope_value(record: &ConnectionRecord) -> Value {
    json!({
        "id": record.id,
        "integration": record.integration,
        "name": record.name,
        "parameters": record.parameters,
    })
}

/// The connection object of the API: never its credentials.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub id: String,
    pub tenant: String,
    /// The integration's key.
    pub integration: String,
    pub name: String,
    pub state: ConnectionState,
    /// Its parameters (as the integration's `parameters` schema says).
    pub parameters: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Why its last test, use or refresh failed.
    pub error: Option<String>,
    /// When an OAuth2 access token expires.
    pub credentials_expire_at: Option<DateTime<Utc>>,
    /// The actions it overrides (`GET .../actions/{key}` shows each).
    pub overrides: Vec<String>,
    /// `POST .../refresh` only: why the refresh failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_error: Option<String>,
}

pub fn view(record: &ConnectionRecord) -> ConnectionView {
    ConnectionView {
        id: record.id.clone(),
        tenant: record.tenant.clone(),
        integration: record.integration.clone(),
        name: record.name.clone(),
        state: record.state,
        parameters: record.parameters.clone(),
        created_at: record.created_at,
        updated_at: record.updated_at,
        last_used_at: record.last_used_at,
        error: record.error.clone(),
        credentials_expire_at: record.credentials_expire_at,
        overrides: record.overrides.keys().cloned().collect(),
        refresh_error: None,
    }
}

/// `base` and `path` with exactly one `/` between them.
pub fn join(base: &str, path: &str) -> String {
    match (base.ends_with('/'), path.starts_with('/')) {
        (true, true) => format!("{base}{}", &path[1..]),
        (false, false) if !path.is_empty() => format!("{base}/{path}"),
        _ => format!("{base}{path}"),
    }
}

fn check_parameters(integration: &Integration, parameters: &Value) -> Vec<SchemaError> {
    match &integration.parameters {
        Some(schema) => schema.check(parameters, "/parameters"),
        None if parameters.as_object().is_some_and(Map::is_empty) || parameters.is_null() => {
            Vec::new()
        }
        None => vec![invalid(
            "/parameters",
            format!("integration `{}` takes no parameters", integration.key),
        )],
    }
}

/// The credential fields the auth type takes, each a non-empty string.
fn check_credentials(
    integration: &Integration,
    credentials: Option<&Value>,
    errors: &mut Vec<SchemaError>,
) -> BTreeMap<String, SecretString> {
    let fields = integration.auth.credential_fields();
    let takes = if fields.is_empty() {
        "none".to_owned()
    } else {
        fields.join(", ")
    };
    let auth = integration.auth.type_name();
    let mut out = BTreeMap::new();
    let object = match credentials {
        None if fields.is_empty() => return out,
        None => {
            errors.push(invalid(
                "/credentials",
                format!("is required: {auth} auth takes {takes}"),
            ));
            return out;
        }
        Some(Value::Object(o)) => o,
        Some(_) => {
            errors.push(invalid(
                "/credentials",
                format!("must be an object of {takes}"),
            ));
            return out;
        }
    };
    for field in fields {
        match object.get(*field) {
            Some(Value::String(s)) if !s.is_empty() => {
                out.insert((*field).to_owned(), SecretString::from(s.clone()));
            }
            Some(Value::String(_)) => {
                errors.push(invalid(&format!("/credentials/{field}"), "is empty"))
            }
            Some(_) => errors.push(invalid(
                &format!("/credentials/{field}"),
                "must be a string",
            )),
            None => errors.push(invalid(&format!("/credentials/{field}"), "is required")),
        }
    }
    for key in object.keys() {
        if !fields.contains(&key.as_str()) {
            errors.push(invalid(
                &format!("/credentials/{key}"),
                format!("is not a credential of {auth} auth (it takes {takes})"),
            ));
        }
    }
    out
}

fn seal_all(
    vault: &KeyRing,
    record: &mut ConnectionRecord,
    credentials: &BTreeMap<String, SecretString>,
) -> Result<(), ConnectError> {
    for (field, value) in credentials {
        let binding = Binding {
            tenant: &record.tenant,
            connection: &record.id,
            field,
        };
        let sealed = vault.seal(binding, value)?;
        record.credentials.insert(field.clone(), sealed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_and_path_meet_at_one_slash() {
        assert_eq!(join("https://x/api", "/me"), "https://x/api/me");
        assert_eq!(join("https://x/api/", "/me"), "https://x/api/me");
        assert_eq!(join("https://x/api", "me"), "https://x/api/me");
        assert_eq!(join("https://x/api/", "me"), "https://x/api/me");
        assert_eq!(join("https://x", ""), "https://x");
    }
}
