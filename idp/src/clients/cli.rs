//! `habilis client …`: manage registered clients from the command line, directly on the store (no
//! running server needed; running instances pick changes up within a second).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use super::model::{Client, ClientKeys};
use super::registration::{IssueRequest, TokenState, issue_initial_access_token, revoke_initial_access_token};
use super::registry::{ClientEntry, ClientRegistry, PreparedRegistration, RegistryError};
use crate::audit::Audit;
use crate::config::Config;
use crate::store::{SharedStore, Store};

#[derive(Subcommand, Debug, Clone)]
pub enum ClientCommand {
    /// Create or update clients from an RFC 7591 metadata file: one JSON object, or an array of
    /// them. Each may carry `client_id` (generated when absent) and `client_secret` (generated for
    /// client_secret_basic/post when absent; shown once). Use `-` to read standard input.
    Import {
        /// The JSON file (`-` for standard input).
        file: PathBuf,
        /// The client id (only for a file holding a single client).
        #[arg(long)]
        client_id: Option<String>,
    },
    /// List registered clients.
    List,
    /// Show a client's metadata (never its secret).
    Show { client_id: String },
    /// Delete a client, with its grants (refresh tokens) and consents.
    Remove { client_id: String },
    /// Generate a new secret for a client_secret_basic/post client; the old one stops working.
    RotateSecret { client_id: String },
    /// Initial access tokens for dynamic client registration (RFC 7591 `POST /register`): issue
    /// (shown once), list, revoke.
    #[command(subcommand)]
    RegistrationToken(RegistrationTokenCommand),
}

#[derive(Subcommand, Debug, Clone)]
pub enum RegistrationTokenCommand {
    /// Issue a token that lets an application register itself at POST /register. Printed once;
    /// only its hash is stored.
    Issue {
        /// How long the token stays valid, e.g. 30m, 24h, 7days (at most 90 days).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        expires_in: Duration,
        /// How many clients it may register.
        #[arg(long, default_value_t = 1)]
        max_uses: i64,
        /// A note for administrators: who the token is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// List tokens (never the tokens themselves): state, uses, expiry.
    List,
    /// Revoke a token by its id: it registers no further client (those it registered stay).
    Revoke { id: String },
}

/// Runs a client command, printing human-readable output. Errors say what to fix.
pub async fn run(config: &Config, store: SharedStore, cmd: &ClientCommand) -> Result<(), String> {
    let registry = ClientRegistry::new(store.clone());
    match cmd {
        ClientCommand::RegistrationToken(command) => {
            // Issuing and revoking tokens is audited in the durable log, flushed before exiting.
            let audit = crate::audit::cli::cli_audit(config, &store);
            let result = registration_token(config, store.as_ref(), &audit, command).await;
            audit.shutdown().await;
            result
        }
        ClientCommand::Import { file, client_id } => import(config, &registry, file, client_id.as_deref()).await,
        ClientCommand::List => list(&registry).await,
        ClientCommand::Show { client_id } => show(&registry, client_id).await,
        ClientCommand::Remove { client_id } => {
            if registry.remove(client_id).await.map_err(|e| e.to_string())? {
                println!(
                    "removed client `{client_id}` (its grants and consents were deleted with it); \
                     running instances refuse it within a second"
                );
                Ok(())
            } else {
                Err(format!("no client `{client_id}`; list clients with `habilis client list`"))
            }
        }
        ClientCommand::RotateSecret { client_id } => {
            let secret = registry.rotate_secret(client_id).await.map_err(|e| e.to_string())?;
            println!("new secret for client `{client_id}`:");
            print_secret(client_id, &secret);
            println!(
                "The previous secret stops working within a second on every instance: update the \
                 application now."
            );
            Ok(())
        }
    }
}

fn read_input(file: &Path) -> Result<String, String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read standard input: {e}"))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
    }
}

/// Every document is validated before anything is written, so a mistake in the tenth client of a
/// file does not leave the first nine half-imported.
async fn import(
    config: &Config,
    registry: &ClientRegistry,
    file: &Path,
    client_id: Option<&str>,
) -> Result<(), String> {
    let text = read_input(file)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not valid JSON ({e}); expected an RFC 7591 client metadata object or an array \
             of them",
            file.display()
        )
    })?;
    let documents = match value {
        Value::Array(items) => {
            if client_id.is_some() && items.len() != 1 {
                return Err("--client-id applies to a single client; put `client_id` in each object of \
                     the array instead"
                    .into());
            }
            items
        }
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(format!("{} must hold a JSON object (one client) or an array of objects", file.display()));
        }
    };
    if documents.is_empty() {
        return Err(format!("{} holds an empty array: nothing to import", file.display()));
    }

    let mut prepared: Vec<PreparedRegistration> = Vec::with_capacity(documents.len());
    for (i, document) in documents.iter().enumerate() {
        let label = if documents.len() > 1 {
            format!("client #{} in {}", i + 1, file.display())
        } else {
            file.display().to_string()
        };
        let text = serde_json::to_string(document).map_err(|e| format!("{label}: {e}"))?;
        let registration = registry.prepare(&text, client_id, None).map_err(|e| format!("{label}: {e}"))?;
        check_against_config(config, registration.client()).map_err(|e| format!("{label}: {e}"))?;
        let id = registration.client().client_id();
        if prepared.iter().any(|p| p.client().client_id() == id) {
            return Err(format!("{label}: client_id `{id}` appears twice in the file"));
        }
        prepared.push(registration);
    }

    let issuer = config.issuer_string();
    for registration in prepared {
        let outcome = registry.register_prepared(registration).await.map_err(|e: RegistryError| e.to_string())?;
        let client = &outcome.client;
        println!("{} client `{}`", if outcome.created { "created" } else { "updated" }, client.client_id());
        print_summary(client);
        if let Some(secret) = &outcome.secret {
            print_secret(client.client_id(), secret);
        } else if client.token_endpoint_auth_method().uses_secret() {
            println!("  client_secret:  unchanged (or as given in the file)");
        }
    }
    println!("Configure applications with the issuer {issuer} (discovery: {issuer}/.well-known/openid-configuration).");
    Ok(())
}

/// Checks what the metadata alone cannot: that the signing algorithms it asks for are enabled.
fn check_against_config(config: &Config, client: &Client) -> Result<(), String> {
    client.check_enabled_algorithms(&config.keys.algorithms).map_err(|e| e.to_string())
}

fn print_secret(client_id: &str, secret: &str) {
    println!("  client_secret:  {secret}");
    println!(
        "  WARNING: copy this secret now. Only its hash is stored: it will not be shown again. If \
         it is lost, run `habilis client rotate-secret {client_id}`."
    );
}

fn print_summary(client: &Client) {
    let kind = if client.is_public() { "public" } else { "confidential" };
    println!(
        "  type:           {} {kind} client, authenticates with {}",
        client.application_type().as_str(),
        client.token_endpoint_auth_method()
    );
    if let Some(name) = client.client_name() {
        println!("  name:           {name}");
    }
    let grants: Vec<&str> = client.grant_types().iter().map(|g| g.as_str()).collect();
    println!("  grant types:    {}", grants.join(", "));
    if !client.redirect_uris().is_empty() {
        println!("  redirect URIs:  {}", client.redirect_uris().join(" "));
    }
    println!("  scopes:         {}", client.allowed_scopes().join(" "));
    match client.keys() {
        ClientKeys::None => {}
        ClientKeys::Inline(keys) => println!("  keys:           {} inline JWK(s)", keys.len()),
        ClientKeys::Remote(uri) => println!("  keys:           {uri}"),
    }
}

fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

async fn list(registry: &ClientRegistry) -> Result<(), String> {
    let entries = registry.list().await.map_err(|e| e.to_string())?;
    if entries.is_empty() {
        println!("no clients yet: import one with `habilis client import FILE`");
        return Ok(());
    }
    println!("{:<36} {:<7} {:<20} {:<40} NAME", "CLIENT_ID", "TYPE", "AUTH", "GRANTS");
    for entry in &entries {
        match &entry.client {
            Ok(client) => {
                let grants: Vec<&str> = client.grant_types().iter().map(|g| g.as_str()).collect();
                println!(
                    "{:<36} {:<7} {:<20} {:<40} {}",
                    entry.client_id,
                    client.application_type().as_str(),
                    client.token_endpoint_auth_method().as_str(),
                    grants.join(","),
                    client.client_name().unwrap_or("-")
                );
            }
            Err(e) => println!("{:<36} INVALID: {e} (fix with `habilis client import`)", entry.client_id),
        }
    }
    println!("{} client(s)", entries.len());
    Ok(())
}

async fn show(registry: &ClientRegistry, client_id: &str) -> Result<(), String> {
    let entry: ClientEntry = registry
        .describe(client_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no client `{client_id}`; list clients with `habilis client list`"))?;
    println!("client_id:        {}", entry.client_id);
    println!("created:          {}", format_time(entry.created_at));
    println!("updated:          {}", format_time(entry.updated_at));
    match &entry.client {
        Ok(client) => {
            print_summary(client);
            if client.token_endpoint_auth_method().uses_secret() {
                println!(
                    "  client_secret:  {} (only a hash is stored; `habilis client rotate-secret {}` issues a new one)",
                    if entry.has_secret { "set" } else { "MISSING" },
                    entry.client_id
                );
            }
        }
        Err(e) => println!(
            "status:           INVALID — refused until fixed: {e}\n                  fix it with `habilis client import FILE --client-id {}`",
            entry.client_id
        ),
    }
    let pretty = serde_json::from_str::<Value>(&entry.metadata)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(entry.metadata);
    println!("metadata:\n{pretty}");
    Ok(())
}

/// Who issues and revokes tokens from the command line, as audit events name them.
const CLI_ACTOR: &str = "cli";

async fn registration_token(
    config: &Config,
    store: &dyn Store,
    audit: &Audit,
    cmd: &RegistrationTokenCommand,
) -> Result<(), String> {
    let now = crate::unix_now();
    match cmd {
        RegistrationTokenCommand::Issue { expires_in, max_uses, description } => {
            let request =
                IssueRequest { expires_in: *expires_in, max_uses: *max_uses, description: description.clone() };
            let issued =
                issue_initial_access_token(store, audit, CLI_ACTOR, &request, now).await.map_err(|e| e.to_string())?;
            let record = &issued.record;
            let endpoint = format!("{}{}", config.issuer_string(), crate::oidc::registration::PATH);
            println!(
                "issued initial access token {} ({} registration(s), expires {})",
                record.id,
                record.max_uses,
                format_time(record.expires_at)
            );
            println!("  token:          {}", issued.token.as_str());
            println!(
                "  WARNING: copy this token now. Only its hash is stored: it will not be shown again. \
                 Revoke it with `habilis client registration-token revoke {}`.",
                record.id
            );
            println!("Register a client with it (RFC 7591):");
            println!(
                "  curl -X POST {endpoint} -H 'Authorization: Bearer <token>' -H 'Content-Type: application/json' \\\n    \
                 -d '{{\"client_name\": \"My app\", \"redirect_uris\": [\"https://app.example.org/callback\"]}}'"
            );
            if !config.registration.enabled {
                println!(
                    "NOTE: registration is disabled on this server (registration.enabled = false): \
                     the token works only once it is enabled."
                );
            }
            Ok(())
        }
        RegistrationTokenCommand::List => {
            let tokens = store.registrations().list_initial_access_tokens().await.map_err(|e| e.to_string())?;
            if tokens.is_empty() {
                println!("no initial access tokens: issue one with `habilis client registration-token issue`");
                return Ok(());
            }
            println!("{:<12} {:<8} {:<11} {:<20} DESCRIPTION", "ID", "STATE", "USES", "EXPIRES");
            for token in &tokens {
                println!(
                    "{:<12} {:<8} {:<11} {:<20} {}",
                    token.id,
                    TokenState::of(token, now).as_str(),
                    format!("{}/{}", token.uses, token.max_uses),
                    format_time(token.expires_at),
                    token.description.as_deref().unwrap_or("-")
                );
            }
            println!("{} token(s)", tokens.len());
            Ok(())
        }
        RegistrationTokenCommand::Revoke { id } => {
            if revoke_initial_access_token(store, audit, CLI_ACTOR, id, now).await.map_err(|e| e.to_string())? {
                println!("revoked initial access token {id}; clients it registered are unaffected");
                Ok(())
            } else {
                Err(format!(
                    "no unrevoked initial access token `{id}`; list them with `habilis client registration-token list`"
                ))
            }
        }
    }
}
