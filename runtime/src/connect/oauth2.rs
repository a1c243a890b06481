//! The OAuth2 client, on weir's own reqwest client: the authorization URL
//! (with `state` and a PKCE S256 challenge), the code exchange and the
//! refresh grant. Tolerant of what real providers send: no `token_type`,
//! no `refresh_token` on refresh, `expires_in` as a string, errors as JSON
//! or as text; an answer that is HTML or holds no token is an error a
//! person can act on. Redirects are not followed (a token endpoint that
//! redirects is misconfigured, and a redirect could carry the secret away).

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::Digest;

use super::integration::{ClientAuth, OAuth2};

/// How long a token request may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);

fn client() -> &'static reqwest::Client {
    static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
        reqwest::Client::builder()
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Building fails only if the TLS backend cannot initialise.
            .expect("the OAuth2 HTTP client must initialise")
    });
    &CLIENT
}

/// The client's id and secret (from the integration's `client_id_env` and
/// `client_secret_env`).
pub struct ClientCredentials {
    pub id: String,
    pub secret: SecretString,
}

impl ClientCredentials {
    /// Reads them from the environment; the error names the variable.
    pub fn from_env(o: &OAuth2) -> Result<Self, String> {
        let read = |var: &str| match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(format!(
                "{var} is not set: the OAuth2 client of this integration needs it"
            )),
        };
        Ok(Self {
            id: read(&o.client_id_env)?,
            secret: SecretString::from(read(&o.client_secret_env)?),
        })
    }
}

/// The provider's URL for a request, and the PKCE verifier behind its
/// challenge.
pub struct Start {
    pub verifier: SecretString,
    pub url: reqwest::Url,
}

/// 32 random bytes, base64url: a `state` secret or a PKCE verifier (43
/// characters, within RFC 7636's 43–128).
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 challenge of a PKCE verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The provider's authorization URL for a new request with `state`.
pub fn authorize_url(
    o: &OAuth2,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
) -> Result<Start, String> {
    let mut url = reqwest::Url::parse(&o.authorize_url)
        .map_err(|e| format!("`authorize_url` is not a URL: {e}"))?;
    let verifier = random_token();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair("client_id", client_id);
        q.append_pair("redirect_uri", redirect_uri);
        if !o.scopes.is_empty() {
            q.append_pair("scope", &o.scopes.join(" "));
        }
        q.append_pair("state", state);
        if o.pkce {
            q.append_pair("code_challenge", &challenge(&verifier));
            q.append_pair("code_challenge_method", "S256");
        }
        for (k, v) in &o.extra_authorize_params {
            q.append_pair(k, v);
        }
    }
    Ok(Start {
        verifier: SecretString::from(verifier),
        url,
    })
}

/// What a token endpoint granted.
pub struct Tokens {
    pub access_token: SecretString,
    /// `None` when the answer held none (on refresh: keep the old one).
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("refresh_token", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a token request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The provider refused the grant for good (`invalid_grant`,
    /// `invalid_client`, …): the connection needs reconnecting.
    #[error("the provider refused: {error}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        error: String,
        description: Option<String>,
    },
    /// A timeout, a connection error, 429 or 5xx: worth trying again later.
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// An answer weir cannot use (HTML, no token, not JSON).
    #[error("the token endpoint's answer is not usable: {0}")]
    Unusable(String),
}

impl TokenError {
    /// Whether the connection must be reconnected (vs tried again later).
    pub fn disconnects(&self) -> bool {
        matches!(self, TokenError::Refused { .. })
    }
}

/// `grant_type=authorization_code`.
pub async fn exchange(
    o: &OAuth2,
    client: &ClientCredentials,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&SecretString>,
) -> Result<Tokens, TokenError> {
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v.expose_secret().to_owned()));
    }
    token_request(o, client, form).await
}

/// `grant_type=refresh_token`.
pub async fn refresh(
    o: &OAuth2,
    client: &ClientCredentials,
    refresh_token: &SecretString,
) -> Result<Tokens, TokenError> {
    let form = vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh_token.expose_secret().to_owned()),
    ];
    token_request(o, client, form).await
}

async fn token_request(
    o: &OAuth2,
    client: &ClientCredentials,
    mut form: Vec<(&'static str, String)>,
) -> Result<Tokens, TokenError> {
    let mut request = self::client()
        .post(&o.token_url)
        .timeout(TOKEN_TIMEOUT)
        .header(reqwest::header::ACCEPT, "application/json");
    match o.client_auth {
        ClientAuth::Header => {
            // RFC 6749 2.3.1: each part form-encoded before basic auth.
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request = request.basic_auth(enc(&client.id), Some(enc(client.secret.expose_secret())));
        }
        ClientAuth::Body => {
            form.push(("client_id", client.id.clone()));
            form.push(("client_secret", client.secret.expose_secret().to_owned()));
        }
    }
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let response = request
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(weir_nodes::http_client::describe(e).1))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response
        .text()
        .await
        .map_err(|e| TokenError::Unavailable(weir_nodes::http_client::describe(e).1))?;
    parse_answer(status, &content_type, &text, Utc::now())
}

/// Reads a token endpoint's answer (separate from the request for tests).
pub fn parse_answer(
    status: u16,
    content_type: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<Tokens, TokenError> {
    let json: Option<Value> = serde_json::from_str(text).ok();
    // Some providers answer form-encoded (GitHub without Accept).
    let fields = |name: &str| -> Option<String> {
        match &json {
            Some(v) => v.get(name).and_then(|x| match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            None if content_type.starts_with("application/x-www-form-urlencoded") => {
                form_urlencoded::parse(text.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            }
            None => None,
        }
    };
    if let Some(error) = fields("error") {
        let description = fields("error_description");
        return Err(match (status, error.as_str()) {
            (429 | 500..=599, _) | (_, "temporarily_unavailable" | "server_error") => {
                TokenError::Unavailable(format!("{status}: {error}"))
            }
            _ => TokenError::Refused { error, description },
        });
    }
    if status == 429 || status >= 500 {
        return Err(TokenError::Unavailable(format!("it answered {status}")));
    }
    let looks_html = content_type.starts_with("text/html") || text.trim_start().starts_with('<');
    if !(200..300).contains(&status) {
        let what = if looks_html {
            "an HTML page".to_owned()
        } else {
            let mut t: String = text.chars().take(200).collect();
            if t.is_empty() {
                t = "nothing".into();
            }
            format!("`{t}`")
        };
        return Err(TokenError::Refused {
            error: format!("http_{status}"),
            description: Some(format!("the token endpoint answered {status} with {what}")),
        });
    }
    let Some(access) = fields("access_token").filter(|t| !t.is_empty()) else {
        return Err(TokenError::Unusable(if looks_html {
            "it answered an HTML page, not tokens: is `token_url` the token endpoint?".into()
        } else {
            "it answered 2xx without an access_token".into()
        }));
    };
    let expires_at = fields("expires_in")
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(|s| now + chrono::Duration::milliseconds((s * 1000.0) as i64));
    Ok(Tokens {
        access_token: SecretString::from(access),
        refresh_token: fields("refresh_token")
            .filter(|t| !t.is_empty())
            .map(SecretString::from),
        expires_at,
    })
}

/// Whether a token expiring at `expires_at`, granted at `granted_at`, is
/// due for a refresh at `now`: less than 60 s or 10 % of its lifetime left,
/// whichever is larger.
pub fn due(
    granted_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    let Some(expires_at) = expires_at else {
        return false;
    };
    let lifetime = expires_at - granted_at;
    let margin = std::cmp::max(chrono::Duration::seconds(60), lifetime / 10);
    now >= expires_at - margin
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0)
            .single()
            .expect("a time")
    }

    fn config() -> OAuth2 {
        OAuth2 {
            authorize_url: "https://login.example/authorize?prompt=consent".into(),
            token_url: "https://login.example/token".into(),
            scopes: vec!["a.read".into(), "b.write".into()],
            client_id_env: "X".into(),
            client_secret_env: "Y".into(),
            client_auth: ClientAuth::Header,
            pkce: true,
            extra_authorize_params: [("access_type".to_owned(), "offline".to_owned())].into(),
        }
    }

    #[test]
    fn the_authorization_url_carries_state_pkce_scopes_and_extras() {
        let state = random_token();
        let start = authorize_url(
            &config(),
            "client-1",
            "https://weir.example/oauth2/callback",
            &state,
        )
        .expect("a URL");
        let q: std::collections::HashMap<String, String> = start
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(q["prompt"], "consent", "the URL's own query stays");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "client-1");
        assert_eq!(q["scope"], "a.read b.write");
        assert_eq!(q["state"], state);
        assert_eq!(
            q["code_challenge"],
            challenge(start.verifier.expose_secret())
        );
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(state.len(), 43);
        let again = authorize_url(&config(), "client-1", "x", &state).expect("a URL");
        assert_ne!(
            again.verifier.expose_secret(),
            start.verifier.expose_secret()
        );
    }

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn real_providers_answers_are_read() {
        // Slack-like: no token_type, expires_in as a string, no refresh.
        let t = parse_answer(
            200,
            "application/json",
            r#"{"ok": true, "access_token": "xoxb-1", "expires_in": "3600"}"#,
            now(),
        )
        .expect("tokens");
        assert_eq!(t.access_token.expose_secret(), "xoxb-1");
        assert!(t.refresh_token.is_none());
        assert_eq!(t.expires_at, Some(now() + chrono::Duration::seconds(3600)));
        // Form-encoded (GitHub without Accept).
        let t = parse_answer(
            200,
            "application/x-www-form-urlencoded",
            "access_token=gho_1&scope=repo&token_type=bearer",
            now(),
        )
        .expect("tokens");
        assert_eq!(t.access_token.expose_secret(), "gho_1");
        assert!(t.expires_at.is_none());
        // Rotating refresh tokens.
        let t = parse_answer(
            200,
            "application/json",
            r#"{"access_token": "a", "refresh_token": "r2", "expires_in": 60}"#,
            now(),
        )
        .expect("tokens");
        assert_eq!(
            t.refresh_token.map(|r| r.expose_secret().to_owned()),
            Some("r2".into())
        );
    }

    #[test]
    fn refusals_and_outages_are_told_apart() {
        let refused = parse_answer(
            400,
            "application/json",
            r#"{"error": "invalid_grant", "error_description": "token revoked"}"#,
            now(),
        )
        .expect_err("refused");
        assert!(refused.disconnects());
        assert_eq!(
            refused.to_string(),
            "the provider refused: invalid_grant (token revoked)"
        );
        for (status, body) in [
            (503, "busy"),
            (429, "{}"),
            (500, r#"{"error": "server_error"}"#),
        ] {
            let e = parse_answer(status, "text/plain", body, now()).expect_err("unavailable");
            assert!(!e.disconnects(), "{status}: {e}");
        }
        let html = parse_answer(200, "text/html", "<html><body>Sign in</body></html>", now())
            .expect_err("unusable");
        assert!(
            html.to_string().contains("HTML page") && html.to_string().contains("token_url"),
            "{html}"
        );
        let empty = parse_answer(
            200,
            "application/json",
            r#"{"token_type": "bearer"}"#,
            now(),
        )
        .expect_err("unusable");
        assert!(
            empty.to_string().contains("without an access_token"),
            "{empty}"
        );
        let text = parse_answer(401, "text/plain", "bad client", now()).expect_err("refused");
        assert!(
            text.disconnects() && text.to_string().contains("bad client"),
            "{text}"
        );
        let garbage = parse_answer(200, "application/octet-stream", "\u{1}\u{2}", now())
            .expect_err("unusable");
        assert!(matches!(garbage, TokenError::Unusable(_)));
    }

    #[test]
    fn a_token_is_due_within_a_minute_or_a_tenth_of_its_life() {
        let granted = now();
        let hour = Some(granted + chrono::Duration::seconds(3600));
        assert!(!due(
            granted,
            hour,
            granted + chrono::Duration::seconds(3000)
        ));
        assert!(due(
            granted,
            hour,
            granted + chrono::Duration::seconds(3241)
        ));
        let short = Some(granted + chrono::Duration::seconds(100));
        assert!(!due(
            granted,
            short,
            granted + chrono::Duration::seconds(39)
        ));
        assert!(due(granted, short, granted + chrono::Duration::seconds(41)));
        assert!(!due(granted, None, granted + chrono::Duration::days(999)));
    }

    fn form(r: &weir_testkit::Received) -> std::collections::HashMap<String, String> {
        form_urlencoded::parse(&r.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[tokio::test]
    async fn the_code_exchange_and_the_refresh_send_what_rfc_6749_asks() {
        let server = weir_testkit::FakeServer::start();
        server.set_body(serde_json::json!({"access_token": "at-1", "refresh_token": "rt-1", "expires_in": 3600, "token_type": "Bearer"}));
        let mut o = config();
        o.token_url = server.url("/token");
        let client = ClientCredentials {
            id: "client 1".into(),
            secret: SecretString::from("s&cret"),
        };
        let verifier = SecretString::from("verifier-1");
        let t = exchange(
            &o,
            &client,
            "code-9",
            "https://weir.example/cb",
            Some(&verifier),
        )
        .await
        .expect("tokens");
        assert_eq!(t.access_token.expose_secret(), "at-1");
        let sent = &server.requests_to("/token")[0];
        let f = form(sent);
        assert_eq!(f["grant_type"], "authorization_code");
        assert_eq!(f["code"], "code-9");
        assert_eq!(f["redirect_uri"], "https://weir.example/cb");
        assert_eq!(f["code_verifier"], "verifier-1");
        assert!(!f.contains_key("client_secret"));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("client+1:s%26cret")
        );
        assert_eq!(sent.header("authorization"), Some(basic.as_str()));

        o.client_auth = ClientAuth::Body;
        refresh(&o, &client, &SecretString::from("rt-1"))
            .await
            .expect("tokens");
        let sent = &server.requests_to("/token")[1];
        let f = form(sent);
        assert_eq!(f["grant_type"], "refresh_token");
        assert_eq!(f["refresh_token"], "rt-1");
        assert_eq!(f["client_id"], "client 1");
        assert_eq!(f["client_secret"], "s&cret");
        assert_eq!(sent.header("authorization"), None);

        // A redirect is not followed (it could carry the secret away).
        server.set_status(302);
        server.set_header("location", &server.url("/elsewhere"));
        let e = refresh(&o, &client, &SecretString::from("rt-1"))
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("302"), "{e}");
        assert_eq!(server.count("/elsewhere"), 0);

        // Nothing listening: unavailable, not a reason to disconnect.
        o.token_url = format!(
            "http://{}/token",
            weir_testkit::FakeServer::unused_address()
        );
        let e = refresh(&o, &client, &SecretString::from("rt-1"))
            .await
            .expect_err("unavailable");
        assert!(!e.disconnects(), "{e}");
    }
}
