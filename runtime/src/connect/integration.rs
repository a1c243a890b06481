//! Integration files: one external app each — where its API is
//! (`base_url`, a template over `connection.parameters`), what a connection
//! to it needs (`parameters`, a JSON Schema), how requests authenticate
//! (`auth`), and a request that proves a connection works (`test`).
//!
//! Read with the flows' reader: every problem at once, at FILE:LINE:COL,
//! with "did you mean" for misspelt keys.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use weir_nodes::diag::{Diagnostic, Diags, Pos};
use weir_nodes::reader::{Options, valid_id};
use weir_nodes::script::Template;
use weir_nodes::yaml::{self, Kind, Yaml};

use crate::flow::{Links, LoadError, flow_files, version_of};

/// The names `base_url` and request templates see.
pub const CONNECTION_SCOPE: &[&str] = &["connection"];

/// A loaded integration.
#[derive(Debug)]
pub struct Integration {
    pub key: String,
    pub name: Option<String>,
    pub file: String,
    /// The first 16 hex digits of the SHA-256 of the file's text.
    pub version: String,
    pub base_url: Template,
    /// The JSON Schema of a connection's `parameters`.
    pub parameters: Option<Schema>,
    pub auth: AuthKind,
    pub test: Option<TestRequest>,
    /// `actions:`: what a connection can do on the app (see `act`).
    pub actions: Vec<crate::act::definition::Action>,
}

pub use crate::act::schema::{Schema, SchemaError};

/// How requests to the app carry a connection's credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthKind {
    None,
    /// `{api_key}`, in a header or a query parameter named `name`.
    ApiKey {
        place: KeyPlace,
        name: String,
    },
    /// `{username, password}`, as HTTP basic.
    Basic,
    /// `{token}`, as `Authorization: Bearer`.
    Bearer,
    OAuth2(OAuth2),
}

impl AuthKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            AuthKind::None => "none",
            AuthKind::ApiKey { .. } => "api_key",
            AuthKind::Basic => "basic",
            AuthKind::Bearer => "bearer",
            AuthKind::OAuth2(_) => "oauth2",
        }
    }

    /// The credential fields a connection gives (none for OAuth2, whose
    /// tokens weir obtains).
    pub fn credential_fields(&self) -> &'static [&'static str] {
        match self {
            AuthKind::None | AuthKind::OAuth2(_) => &[],
            AuthKind::ApiKey { .. } => &["api_key"],
            AuthKind::Basic => &["username", "password"],
            AuthKind::Bearer => &["token"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPlace {
    Header,
    Query,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP basic with the client id and secret (the default).
    Header,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2 {
    pub authorize_url: String,
    pub token_url: String,
    pub scopes: Vec<String>,
    pub client_id_env: String,
    pub client_secret_env: String,
    pub client_auth: ClientAuth,
    pub pkce: bool,
    pub extra_authorize_params: BTreeMap<String, String>,
}

/// `test.request`: a request relative to `base_url`.
#[derive(Debug)]
pub struct TestRequest {
    pub method: reqwest::Method,
    pub path: Template,
}

/// Reads an integration from its text; `file` names it in messages.
pub fn load_source(source: &str, file: &str) -> Result<Integration, LoadError> {
    let root = yaml::parse(source).map_err(|d| LoadError {
        file: file.to_owned(),
        diagnostics: vec![d],
    })?;
    let diags = Diags::new();
    let integration = read(&root, source, file, &diags);
    match integration {
        Some(i) if diags.is_empty() => Ok(i),
        _ => {
            let mut diagnostics = diags.into_sorted();
            if diagnostics.is_empty() {
                diagnostics.push(Diagnostic::new(root.pos, "the integration is invalid"));
            }
            Err(LoadError {
                file: file.to_owned(),
                diagnostics,
            })
        }
    }
}

pub fn load_file(path: &Path) -> Result<Integration, LoadError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|e| LoadError::one(&file, Pos::new(1, 1), format!("cannot read the file: {e}")))?;
    load_source(&source, &file)
}

/// Every integration file in the given files and folders; keys must be
/// unique across them.
pub fn load_paths(paths: &[PathBuf], links: Links) -> (Vec<Integration>, Vec<LoadError>) {
    let (files, mut errors) = flow_files(paths, links);
    let mut out: Vec<Integration> = Vec::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    for file in files {
        match load_file(&file) {
            Ok(i) => match keys.get(&i.key) {
                Some(first) => errors.push(LoadError::one(
                    &i.file,
                    Pos::new(1, 1),
                    format!(
                        "duplicate integration key `{}`: {first} has it too; keys must be unique across the integrations folder",
                        i.key
                    ),
                )),
                None => {
                    keys.insert(i.key.clone(), i.file.clone());
                    out.push(i);
                }
            },
            Err(e) => errors.push(e),
        }
    }
    (out, errors)
}

fn read(root: &Yaml, source: &str, file: &str, diags: &Diags) -> Option<Integration> {
    let mut o = Options::new(root, "integration", source, diags);
    let key = o.required_str("key").map(|(key, pos)| {
        if !valid_id(key) {
            diags.error(
                pos,
                format!("integration key `{key}` must match [a-z0-9_-]{{1,64}}"),
            );
        }
        key.to_owned()
    });
    if let Some(key) = &key {
        o.what = format!("integration '{key}'");
    }
    let name = o.str("name").map(|(n, _)| n.to_owned());
    let base_url = o.required_template("base_url", CONNECTION_SCOPE);
    if let (Some(url), Some(value)) = (&base_url, o.get("base_url"))
        && let Some(text) = url.as_literal()
        && !(text.starts_with("http://") || text.starts_with("https://"))
    {
        o.error(
            value.pos,
            format!("`base_url` must be an http(s) URL, not `{text}`"),
        );
    }
    let parameters = o
        .get("parameters")
        .and_then(|v| crate::act::schema::read(v, "parameters", &o));
    let auth = o.required("auth").and_then(|v| read_auth(v, source, diags));
    let test = o.get("test").and_then(|v| read_test(v, source, diags));
    let actions = match (o.get("actions"), &key) {
        (Some(v), Some(key)) => {
            crate::act::definition::read_integration_actions(v, source, file, key, diags)
        }
        _ => Vec::new(),
    };
    o.finish();
    Some(Integration {
        key: key?,
        name,
        file: file.to_owned(),
        version: version_of(source),
        base_url: base_url?,
        parameters,
        auth: auth?,
        test,
        actions,
    })
}

fn read_auth(value: &Yaml, source: &str, diags: &Diags) -> Option<AuthKind> {
    let mut a = Options::new(value, "`auth`", source, diags);
    let (kind, pos) = a.required_str("type")?;
    let auth = match kind {
        "none" => Some(AuthKind::None),
        "basic" => Some(AuthKind::Basic),
        "bearer" => Some(AuthKind::Bearer),
        "api_key" => {
            let place = match a.str("in") {
                None | Some(("header", _)) => Some(KeyPlace::Header),
                Some(("query", _)) => Some(KeyPlace::Query),
                Some((other, pos)) => {
                    a.error(
                        pos,
                        format!("`in` must be `header` or `query`, not `{other}`"),
                    );
                    None
                }
            };
            let name = match a.required_str("name") {
                Some((n, pos)) if n.trim().is_empty() => {
                    a.error(
                        pos,
                        "`name` is empty; name the header or query parameter, like X-API-Key",
                    );
                    None
                }
                Some((n, _)) => Some(n.to_owned()),
                None => None,
            };
            Some(AuthKind::ApiKey {
                place: place?,
                name: name?,
            })
        }
        "oauth2" => read_oauth2(&mut a).map(AuthKind::OAuth2),
        other => {
            let hint = weir_nodes::reader::closest(
                other,
                &["oauth2", "api_key", "basic", "bearer", "none"],
            )
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
            a.error(
                pos,
                format!(
                    "unknown auth type `{other}`{hint}; use oauth2, api_key, basic, bearer or none"
                ),
            );
            // Its other options cannot be judged without a type.
            return None;
        }
    };
    a.finish();
    auth
}

fn read_oauth2(a: &mut Options<'_>) -> Option<OAuth2> {
    let url = |a: &mut Options<'_>, key: &'static str| {
        let (text, pos) = a.required_str(key)?;
        match reqwest::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(text.to_owned()),
            _ => {
                a.error(pos, format!("`{key}` must be an http(s) URL, not `{text}`"));
                None
            }
        }
    };
    let authorize_url = url(a, "authorize_url");
    let token_url = url(a, "token_url");
    let scopes = a
        .str_list("scopes")
        .map(|list| list.into_iter().map(|(s, _)| s.to_owned()).collect())
        .unwrap_or_default();
    let env = |a: &mut Options<'_>, key: &'static str| {
        let (name, pos) = a.required_str(key)?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            a.error(
                pos,
                format!("`{key}` must name an environment variable, like CRM_CLIENT_ID"),
            );
            return None;
        }
        Some(name.to_owned())
    };
    let client_id_env = env(a, "client_id_env");
    let client_secret_env = env(a, "client_secret_env");
    let client_auth = match a.str("client_auth") {
        None | Some(("header", _)) => Some(ClientAuth::Header),
        Some(("body", _)) => Some(ClientAuth::Body),
        Some((other, pos)) => {
            a.error(
                pos,
                format!("`client_auth` must be `header` or `body`, not `{other}`"),
            );
            None
        }
    };
    let pkce = a.bool("pkce").unwrap_or(true);
    let mut extra = BTreeMap::new();
    if let Some(value) = a.get("extra_authorize_params") {
        match &value.kind {
            Kind::Map(entries) => {
                for (k, v) in entries {
                    match &v.kind {
                        Kind::Str(s) => {
                            extra.insert(k.name.clone(), s.clone());
                        }
                        Kind::Int(_) | Kind::Bool(_) | Kind::Float(_) => {
                            extra.insert(k.name.clone(), v.to_json().to_string());
                        }
                        _ => a.error(
                            v.pos,
                            format!("`extra_authorize_params.{}` must be text", k.name),
                        ),
                    }
                }
            }
            _ => a.error(value.pos, "`extra_authorize_params` must be a map of text"),
        }
    }
    Some(OAuth2 {
        authorize_url: authorize_url?,
        token_url: token_url?,
        scopes,
        client_id_env: client_id_env?,
        client_secret_env: client_secret_env?,
        client_auth: client_auth?,
        pkce,
        extra_authorize_params: extra,
    })
}

fn read_test(value: &Yaml, source: &str, diags: &Diags) -> Option<TestRequest> {
    let mut t = Options::new(value, "`test`", source, diags);
    let request = t.required("request");
    t.finish();
    let mut r = Options::new(request?, "`test.request`", source, diags);
    let method = match r.str("method") {
        None => Some(reqwest::Method::GET),
        Some((m, pos)) => match m.to_ascii_uppercase().parse::<reqwest::Method>() {
            Ok(m) if m.as_str().bytes().all(|b| b.is_ascii_uppercase()) => Some(m),
            _ => {
                r.error(pos, format!("`method` `{m}` is not an HTTP method"));
                None
            }
        },
    };
    let path = r.required_template("path", CONNECTION_SCOPE);
    r.finish();
    Some(TestRequest {
        method: method?,
        path: path?,
    })
}

impl crate::daemon::registry::Item for Integration {
    const KIND: &'static str = "integration";
    fn id(&self) -> &str {
        &self.key
    }
    fn file(&self) -> &str {
        &self.file
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn load(path: &Path) -> Result<Self, LoadError> {
        load_file(path)
    }
    fn duplicate(&self, first: &str) -> LoadError {
        LoadError::one(
            &self.file,
            Pos::new(1, 1),
            format!(
                "duplicate integration key `{}`: {first} has it too; keys must be unique across the integrations folder",
                self.key
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(source: &str) -> Vec<String> {
        match load_source(source, "crm.yaml") {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics.iter().map(|d| d.render(&e.file)).collect(),
        }
    }

    const CRM: &str = r#"key: crm
name: Example CRM
base_url: https://${connection.parameters.subdomain}.crm.example/api
parameters:
  type: object
  required: [subdomain]
  properties: {subdomain: {type: string, pattern: "^[a-z0-9-]+$"}}
auth:
  type: oauth2
  authorize_url: https://login.crm.example/oauth/authorize
  token_url: https://login.crm.example/oauth/token
  scopes: [contacts.read, contacts.write]
  client_id_env: CRM_CLIENT_ID
  client_secret_env: CRM_CLIENT_SECRET
  client_auth: body
  extra_authorize_params: {access_type: offline}
test:
  request: {method: GET, path: /me}
"#;

    #[test]
    fn an_oauth2_integration_loads_with_every_option() {
        let i = load_source(CRM, "crm.yaml").expect("loads");
        assert_eq!(i.key, "crm");
        let AuthKind::OAuth2(o) = &i.auth else {
            panic!("{:?}", i.auth)
        };
        assert_eq!(o.client_auth, ClientAuth::Body);
        assert!(o.pkce);
        assert_eq!(o.scopes, ["contacts.read", "contacts.write"]);
        assert_eq!(o.extra_authorize_params["access_type"], "offline");
        let test = i.test.expect("a test");
        assert_eq!(test.method, reqwest::Method::GET);
        let params = i.parameters.expect("a schema");
        assert!(
            params
                .check(&serde_json::json!({"subdomain": "acme"}), "/parameters")
                .is_empty()
        );
        let errors = params.check(&serde_json::json!({"subdomain": "Not OK!"}), "/parameters");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].pointer, "/parameters/subdomain");
        let errors = params.check(&serde_json::json!({}), "/parameters");
        assert_eq!(errors[0].pointer, "/parameters/subdomain");
        assert!(errors[0].message.contains("subdomain"), "{errors:?}");
    }

    #[test]
    fn api_key_basic_bearer_and_none_load() {
        for (auth, fields) in [
            ("{type: api_key, in: query, name: key}", &["api_key"][..]),
            ("{type: api_key, name: X-API-Key}", &["api_key"]),
            ("{type: basic}", &["username", "password"]),
            ("{type: bearer}", &["token"]),
            ("{type: none}", &[]),
        ] {
            let source = format!("key: k\nbase_url: https://api.example\nauth: {auth}\n");
            let i = load_source(&source, "k.yaml").unwrap_or_else(|e| panic!("{auth}: {e}"));
            assert_eq!(i.auth.credential_fields(), fields);
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_position() {
        let source = "key: Bad Key\nbase_url: ftp://x\nparameters: {type: objekt}\nauth:\n  type: oauth\n  colour: red\ntest:\n  request: {method: 'NOT A METHOD', path: '${nope}'}\nextra: 1\n";
        let found = problems(source);
        let expect = [
            ("crm.yaml:1:6:", "must match [a-z0-9_-]"),
            ("crm.yaml:2:11:", "http(s) URL"),
            ("crm.yaml:3:13:", "not a valid JSON Schema"),
            ("crm.yaml:5:9:", "did you mean `oauth2`"),
            ("crm.yaml:8:21:", "not an HTTP method"),
            ("crm.yaml:9:1:", "extra"),
        ];
        for (at, needle) in expect {
            assert!(
                found
                    .iter()
                    .any(|f| f.starts_with(at) && f.contains(needle)),
                "no `{needle}` at {at} in {found:#?}"
            );
        }
        assert!(found.iter().any(|f| f.contains("nope")), "{found:#?}");
    }

    #[test]
    fn oauth2_needs_its_urls_and_variables() {
        let found = problems(
            "key: k\nbase_url: https://api.example\nauth:\n  type: oauth2\n  authorize_url: not a url\n  client_id_env: 'has space'\n  client_auth: both\n",
        );
        for needle in [
            "`authorize_url` must be an http(s) URL",
            "token_url",
            "`client_id_env` must name an environment variable",
            "client_secret_env",
            "`client_auth` must be `header` or `body`",
        ] {
            assert!(
                found.iter().any(|f| f.contains(needle)),
                "no `{needle}` in {found:#?}"
            );
        }
    }

    #[test]
    fn duplicate_keys_across_files_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a.yaml", "b.yaml"] {
            std::fs::write(
                dir.path().join(name),
                "key: k\nbase_url: https://x\nauth: {type: none}\n",
            )
            .expect("write");
        }
        let (found, errors) = load_paths(&[dir.path().to_path_buf()], Links::WithinFolder);
        assert_eq!(found.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .contains("duplicate integration key `k`"),
            "{}",
            errors[0]
        );
    }
}
