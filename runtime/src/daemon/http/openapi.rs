//! `GET /openapi.json`: the OpenAPI 3.1 document of every endpoint but
//! `/mcp`, generated from each handler's `#[utoipa::path]` and the types
//! it reads and answers — so it cannot drift from what weir does.
//!
//! Routes are added to the router only as [`Endpoint`]s (the
//! [`endpoint!`] macro): a handler, its path and methods, and a function
//! that describes it. The router is built at start from the path and
//! methods alone; the document — every schema of every operation — is
//! built on the first `GET /openapi.json` and kept, so a daemon nobody
//! asks for it never holds it.
//!
//! What every request can meet before its handler runs (the limits on
//! the request target and headers; for `/api/v1`, the token, the body's
//! size and time, the tenant named) is added here to every operation it
//! applies to.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use utoipa::openapi::path::{Operation, Paths};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi as _};

use super::{AppState, ErrorBody};

/// A handler's description: the schemas it names and its path item.
pub type Describe = fn() -> (Vec<(String, RefOr<Schema>)>, Paths);

/// One handler as a route: where it is served, and how it is described.
pub struct Endpoint {
    pub path: String,
    pub route: MethodRouter<Arc<AppState>>,
    pub describe: Describe,
}

impl Endpoint {
    /// The same endpoint with its route changed (a layer added).
    pub fn map(
        mut self,
        f: impl FnOnce(MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>>,
    ) -> Self {
        self.route = f(self.route);
        self
    }
}

/// `endpoint!(module::handler)`: the [`Endpoint`] of a handler annotated
/// with `#[utoipa::path]`. Only its path and methods are read now.
macro_rules! endpoint {
    ($module:ident :: $handler:ident) => {
        utoipa_axum::paste! {{
            use utoipa::Path as _;
            use utoipa_axum::PathItemExt as _;
            $crate::daemon::http::openapi::Endpoint {
                path: $module::[<__path_ $handler>]::path(),
                route: $module::[<__path_ $handler>]::methods().iter().fold(
                    axum::routing::MethodRouter::new(),
                    |route, method| route.on(method.to_method_filter(), $module::$handler),
                ),
                describe: || {
                    let (schemas, paths, _): (
                        _,
                        _,
                        axum::routing::MethodRouter<std::sync::Arc<$crate::daemon::http::AppState>>,
                    ) = utoipa_axum::routes!($module::$handler);
                    (schemas, paths)
                },
            }
        }}
    };
}

/// A router being built, with the description of every route in it.
pub struct Routes {
    router: Router<Arc<AppState>>,
    described: Vec<Describe>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            described: Vec::new(),
        }
    }
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve `endpoint` (a second handler on a path adds its methods).
    pub fn serve(mut self, endpoint: Endpoint) -> Self {
        self.router = self.router.route(&endpoint.path, endpoint.route);
        self.described.push(endpoint.describe);
        self
    }

    /// Change the router, e.g. to add a layer to every route so far; what
    /// it adds is not described.
    pub fn map(mut self, f: impl FnOnce(Router<Arc<AppState>>) -> Router<Arc<AppState>>) -> Self {
        self.router = f(self.router);
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.described.extend(other.described);
        self
    }

    pub fn finish(self) -> (Router<Arc<AppState>>, Vec<Describe>) {
        (self.router, self.described)
    }
}

/// The document, built when first asked for.
pub struct Lazy {
    described: Vec<Describe>,
    json: OnceLock<Bytes>,
}

impl Lazy {
    pub fn new(described: Vec<Describe>) -> Self {
        Lazy {
            described,
            json: OnceLock::new(),
        }
    }

    pub fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(build(&self.described)))
            .clone()
    }
}

/// The document of the routes `described`, as JSON.
fn build(described: &[Describe]) -> Vec<u8> {
    let mut doc = document();
    for describe in described {
        let (schemas, paths) = describe();
        for (path, item) in paths.paths {
            match doc.paths.paths.get_mut(&path) {
                Some(known) => known.merge_operations(item),
                None => {
                    doc.paths.paths.insert(path, item);
                }
            }
        }
        doc.components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(schemas);
    }
    finish(doc)
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "weir",
        description = "weir's HTTP API: flows and their runs, the outbox, tenants, \
                       connections to apps and the actions that run through them, webhooks, \
                       health and metrics. Every `/api/v1` call takes a bearer token (`weir \
                       token`): an admin token acts for every tenant (or the one named with \
                       `X-Weir-Tenant` or `?tenant=`), a tenant token for its own tenant only.",
        license(name = "Apache-2.0")
    ),
    paths(openapi_json),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags(
        (name = "flows", description = "Flows and the runs their api triggers start"),
        (name = "runs", description = "Runs: every node's status, output and error"),
        (name = "outbox", description = "Deliveries waiting for their backend"),
        (name = "connections", description = "A tenant's connections to apps, their overrides, OAuth2"),
        (name = "actions", description = "Typed actions on connected apps"),
        (name = "integrations", description = "The apps a tenant can connect"),
        (name = "tenants", description = "The tenants weir holds data for (admin)"),
        (name = "webhooks", description = "Events from apps"),
        (name = "mcp", description = "What `/mcp` (the Model Context Protocol) needs"),
        (name = "operations", description = "Health, readiness, metrics, this document")
    )
)]
struct Document;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A token of the workspace (`weir token`): HS256, `sub` `admin` or \
                         `tenant:KEY`, with `exp`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's start: its info, tags and security scheme.
fn document() -> OpenApi {
    let mut doc = Document::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as served: the refusals every request can meet added to
/// each operation, as JSON.
fn finish(mut doc: OpenApi) -> Vec<u8> {
    for (path, item) in doc.paths.paths.iter_mut() {
        let api = path.starts_with("/api/v1/");
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            add_refusals(op, api);
        }
    }
    // Serializing the document's own types cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn add_refusals(op: &mut Operation, api: bool) {
    let mut common = vec![
        ("414", "The request target is longer than 8 KiB"),
        ("431", "The request's headers are larger than 32 KiB"),
    ];
    if api {
        common.extend([
            (
                "400",
                "The body is not JSON of the shape the operation takes, a query parameter does \
                 not parse, or the tenant named is not a tenant key",
            ),
            ("401", "No valid bearer token"),
            ("403", "The token's tenant may not act for the tenant named"),
            ("408", "The body did not arrive in time"),
            ("413", "The body is larger than 1 MiB"),
        ]);
    }
    for (status, description) in common {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| refusal(description));
    }
}

fn refusal(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of weir's HTTP API", content_type = "application/json")),
    security(()))]
pub async fn openapi_json() {}

pub async fn serve(document: Arc<Lazy>) -> Response {
    // Built once, in a few milliseconds, on the first request.
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.json(),
    )
        .into_response()
}
