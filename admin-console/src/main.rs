//! `habilis-admin`: the admin console as its own process, in front of a Habilis running elsewhere.
//!
//! Register its client at Habilis first (an administrator's job), e.g.:
//! `habilis client import console.json --client-id habilis-admin` with the redirect URI
//! `<public-url>/callback`, the post-logout redirect URI `<public-url>/logged-out`, scopes
//! `openid profile admin audit`, `client_secret_basic`; then run
//! `HABILIS_ADMIN_CLIENT_SECRET=… habilis-admin --issuer https://idp.example --public-url https://admin.example`.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "habilis-admin", about = "The Habilis admin console, as its own process")]
struct Args {
    /// The issuer of Habilis.
    #[arg(long, env = "HABILIS_ADMIN_ISSUER")]
    issuer: url::Url,
    /// Where browsers reach this console (its redirect URI is `<public-url>/callback`).
    #[arg(long, env = "HABILIS_ADMIN_PUBLIC_URL")]
    public_url: url::Url,
    #[arg(long, env = "HABILIS_ADMIN_CLIENT_ID", default_value = "habilis-admin")]
    client_id: String,
    /// The client secret (prefer the environment variable to the command line).
    #[arg(long, env = "HABILIS_ADMIN_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// The login level required: eidas1, eidas2 or eidas3.
    #[arg(long, env = "HABILIS_ADMIN_ACR", default_value = "eidas2")]
    acr: String,
    /// Address to listen on.
    #[arg(long, env = "HABILIS_ADMIN_LISTEN", default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    if args.public_url.scheme() != "https" && !matches!(args.public_url.host_str(), Some("localhost" | "127.0.0.1")) {
        anyhow::bail!("--public-url must be https (plain http is only for localhost)");
    }
    let console = habilis_admin::Console::new(habilis_admin::ConsoleConfig {
        issuer: args.issuer,
        public_url: args.public_url.clone(),
        client_id: args.client_id,
        client_secret: args.client_secret,
        acr: args.acr,
    })?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("habilis-admin: listening on {} (public URL {})", listener.local_addr()?, args.public_url);
    axum::serve(listener, habilis_admin::router(console))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
