//! `weir mcp --stdio`: the tenant's MCP tools over stdin/stdout, for an
//! agent that starts its tools as a local process. It holds nothing
//! itself: each `tools/list` and `tools/call` goes to a running daemon's
//! `/mcp` (one stateless 2026-07-28 request each, with the `--token`), so
//! the tools, their checks and their runs are exactly the daemon's.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

use super::client::{self, DaemonArgs};
use super::exit;

/// The protocol revision the proxy speaks to the daemon.
const REVISION: &str = "2026-07-28";

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Serve MCP over stdin/stdout (the transport this command offers).
    #[arg(long)]
    pub stdio: bool,
    /// The tenant to act for, with an admin token (or a daemon without a
    /// workspace secret, where it defaults to `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

pub fn main(args: McpArgs) -> ExitCode {
    if !args.stdio {
        eprintln!(
            "weir: `weir mcp` serves over stdio: pass --stdio (agents that speak HTTP use the daemon's /mcp directly)"
        );
        return ExitCode::from(exit::USAGE);
    }
    // Without a token the daemon must be open (no workspace secret); its
    // 401 says so otherwise, on the first request.
    let token = args.daemon.token.clone();
    let url = match args.daemon.url(&["mcp"]) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    client::block_on(async move {
        let proxy = Proxy {
            url,
            token,
            tenant: args.tenant,
            http: reqwest::Client::new(),
            next: AtomicU64::new(1),
        };
        let running = proxy
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("MCP over stdio: {e}"))?;
        running
            .waiting()
            .await
            .map_err(|e| format!("MCP over stdio: {e}"))?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Forwards tool requests to the daemon's `/mcp`.
struct Proxy {
    url: reqwest::Url,
    token: Option<String>,
    tenant: Option<String>,
    http: reqwest::Client,
    next: AtomicU64,
}

impl Proxy {
    /// One JSON-RPC request to the daemon: its `result`, or its error as
    /// this side's error.
    async fn forward(
        &self,
        method: &str,
        name: Option<&str>,
        mut params: Value,
    ) -> Result<Value, McpError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": REVISION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "weir mcp --stdio", "version": env!("CARGO_PKG_VERSION")},
        });
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut request = self
            .http
            .post(self.url.clone())
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", REVISION)
            .header("mcp-method", method)
            .json(&body);
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(tenant) = &self.tenant {
            request = request.header("x-weir-tenant", tenant);
        }
        let unreachable = |e: reqwest::Error| {
            McpError::internal_error(
                format!("the weir daemon at {} cannot be reached: {e}", self.url),
                None,
            )
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let message = answer(&text, id).ok_or_else(|| {
            McpError::internal_error(
                format!(
                    "the daemon answered {status}: {}",
                    weir_nodes::script::excerpt(&text)
                ),
                None,
            )
        })?;
        if let Some(error) = message.get("error") {
            return Err(serde_json::from_value(error.clone()).unwrap_or_else(|_| {
                McpError::internal_error(format!("the daemon answered {error}"), None)
            }));
        }
        Ok(message.get("result").cloned().unwrap_or(Value::Null))
    }
}

/// The JSON-RPC message answering `id` in a body that is either JSON or
/// a stream of server-sent events.
fn answer(text: &str, id: u64) -> Option<Value> {
    let mine = |v: &Value| v.get("id").and_then(Value::as_u64) == Some(id);
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return mine(&v).then_some(v);
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(mine)
}

impl ServerHandler for Proxy {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("weir", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let result = self.forward("tools/list", None, json!({})).await?;
        serde_json::from_value(result)
            .map_err(|e| McpError::internal_error(format!("the daemon's tool list: {e}"), None))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let params =
            json!({"name": request.name, "arguments": request.arguments.unwrap_or_default()});
        let result = self
            .forward("tools/call", Some(&request.name), params)
            .await?;
        let result: CallToolResult = serde_json::from_value(result).map_err(|e| {
            McpError::internal_error(format!("the daemon's tool result: {e}"), None)
        })?;
        Ok(result.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_found_in_json_or_in_events() {
        let json = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#;
        assert_eq!(answer(json, 3).unwrap()["result"]["tools"], json!([]));
        assert!(answer(json, 4).is_none());
        let events = "id: 0\nretry: 3000\ndata: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n\n";
        assert!(answer(events, 7).is_some());
        assert!(answer("<html>", 7).is_none());
    }
}
