//! The `weir` command.

// jemalloc: under load weir allocates and frees many small and mid-sized
// values per event (JSON, Rhai values, sled's node copies); with glibc's
// allocator a third of the daemon's CPU went to malloc/free, and webhook
// throughput was ~30 % lower (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    weir_runtime::cli::main()
}
