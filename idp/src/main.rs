//! The `habilis` binary. Exit codes: 0 success, 1 failure, 2 configuration or usage error.

use clap::Parser;

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
