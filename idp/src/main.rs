//! The `habilis` binary. Exit codes: 0 success, 1 failure, 2 configuration or usage error.

use clap::Parser;

/// mimalloc rather than the system allocator: a token response is many small, short-lived
/// allocations (claims, JSON, policy evaluation), and glibc's malloc spent a quarter of the
/// server's time on them under load (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = habilis_idp::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(habilis_idp::cli::run(cli)) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
