//! The one Rhai engine, configured once: sandbox limits, no file, network or
//! process access, and weir's library.

use std::cell::Cell;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::{Dynamic, Engine, ImmutableString, Token};

use super::library;

/// Bounds every evaluation lives within. An expression that passes one fails
/// its node with Rhai's message ("Too many operations", "Length of string
/// too large", ...), and never hangs the daemon.
pub struct Limits {
    /// Rhai operations per evaluation (a loop iteration, a call, ...).
    pub operations: u64,
    pub call_levels: usize,
    pub expr_depth: usize,
    pub function_expr_depth: usize,
    /// Bytes in one string.
    pub string_size: usize,
    pub array_size: usize,
    pub map_size: usize,
    /// Wall-clock bound for one evaluation when the node sets no `timeout`.
    pub default_deadline: Duration,
}

pub const LIMITS: Limits = Limits {
    operations: 1_000_000,
    call_levels: 32,
    expr_depth: 64,
    function_expr_depth: 32,
    string_size: 4 << 20,
    array_size: 100_000,
    map_size: 100_000,
    default_deadline: Duration::from_secs(5),
};

thread_local! {
    /// When the evaluation running on this thread must stop.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether the last token the tokenizer produced on this thread was `.`.
    static AFTER_DOT: Cell<bool> = const { Cell::new(false) };
}

/// Resets the tokenizer state before a compilation.
pub(crate) fn start_compile() {
    AFTER_DOT.with(|d| d.set(false));
}

/// Runs `f` with a wall-clock deadline that `on_progress` enforces.
pub(crate) fn with_deadline<T>(timeout: Option<Duration>, f: impl FnOnce() -> T) -> T {
    let deadline = Instant::now() + timeout.unwrap_or(LIMITS.default_deadline);
    let previous = DEADLINE.with(|d| d.replace(Some(deadline)));
    let result = f();
    DEADLINE.with(|d| d.set(previous));
    result
}

static ENGINE: LazyLock<Engine> = LazyLock::new(build);

/// The shared engine.
pub fn engine() -> &'static Engine {
    &ENGINE
}

fn build() -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(LIMITS.operations)
        .set_max_call_levels(LIMITS.call_levels)
        .set_max_expr_depths(LIMITS.expr_depth, LIMITS.function_expr_depth)
        .set_max_string_size(LIMITS.string_size)
        .set_max_array_size(LIMITS.array_size)
        .set_max_map_size(LIMITS.map_size)
        .set_max_modules(0)
        // An unknown variable is a load error, not a run-time surprise.
        .set_strict_variables(true)
        // `import` reads files by default; weir scripts import nothing.
        .set_module_resolver(DummyModuleResolver::new())
        .on_print(|text| tracing::info!(target: "weir::script", text, "print"))
        .on_debug(|text, _, pos| tracing::debug!(target: "weir::script", text, %pos, "debug"))
        .on_progress(|ops| {
            // Often enough that a costly operation (hashing a large string)
            // cannot carry an evaluation far past its time limit.
            if ops % 64 != 0 {
                return None;
            }
            let late = DEADLINE.with(|d| d.get().is_some_and(|at| Instant::now() >= at));
            late.then(|| "the time limit was reached".into())
        });
    // A property named like a keyword (`nodes.pause.until`, `nodes.loop`)
    // reads as a property: a `delay` node's output is `{until}`, and node ids
    // like `call` or `loop` are natural. Rhai's own parser refuses keywords
    // after a dot, so the token after a `.` is turned back into a name.
    #[allow(deprecated)] // a volatile API, not a deprecated one
    engine.on_parse_token(|token, _, _| {
        let after_dot =
            AFTER_DOT.with(|d| d.replace(matches!(token, Token::Period | Token::Elvis)));
        if after_dot && (token.is_standard_keyword() || token.is_reserved()) {
            let name = match &token {
                Token::Reserved(name) => name.to_string(),
                other => other.literal_syntax().to_owned(),
            };
            return Token::Identifier(Box::new(name.into()));
        }
        token
    });
    // A field of a missing value is missing too: `event.body.customer.email`
    // reads as `()` when there is no customer, as in a mapping one expects.
    // (A property the getter does not know falls back to the indexer.)
    engine.register_indexer_get(|_: &mut (), _: ImmutableString| Dynamic::UNIT);
    engine.disable_symbol("eval");
    library::register(&mut engine);
    engine
}
