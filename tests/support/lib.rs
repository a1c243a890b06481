//! What weir's end-to-end tests share. Each test binary uses the parts it
//! needs; as a library, nothing here has to be marked as possibly unused.
//!
//! - [`process`]: the `weir` binary as a child process ([`Weir`]), a
//!   daemon on port 0 ([`Daemon`]), [`wait_until`], flow files
//! - [`api`]: a blocking client for a daemon's HTTP API ([`Api`], [`Answer`])
//! - [`fake`]: one configurable fake HTTP server ([`FakeServer`]) that
//!   records every request and answers what the test scripts
//! - [`records`]: a record API for poll triggers ([`RecordServer`])

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

pub mod api;
pub mod console;
pub mod fake;
pub mod process;
pub mod records;

pub use api::{Answer, Api};
pub use fake::{FakeServer, Received};
pub use process::{
    Daemon, Finished, Weir, arg, peer_output, run_weir, wait_until, weir_token, write_flow,
};
pub use records::{Polled, RecordServer};

/// An HS256 JWT with these claims, signed with `secret`: for tokens
/// `weir token` will not make (expired ones, ones without `aud`).
pub fn signed_token(secret: &str, claims: &serde_json::Value) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let head = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(head.as_bytes());
    format!("{head}.{}", b64(&mac.finalize().into_bytes()))
}

/// Whether the tests run under CI (`CI=true`), where a missing peer (the
/// broker, the OAuth2 server, a browser) fails a test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Every file under `dir` (recursively), with its bytes: for tests that
/// search the data folder for a secret.
pub fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    assert!(!out.is_empty(), "no files under {}", dir.display());
    out
}

/// Panics if any of `files` holds `secret`, naming the file.
pub fn assert_not_in_files(files: &[(String, Vec<u8>)], secret: &str) {
    for (file, bytes) in files {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{file} holds {secret}"
        );
    }
}
