//! `habilis person export|erase`: a person's data from the command line.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Subcommand;

use super::{DeletionReason, delete_person, export, find};
use crate::audit::AuditContext;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum PersonCommand {
    /// Print everything held on a person as JSON: the account, its factors and passkeys
    /// (metadata, never a secret), consents, grants, organisations and roles, practice data,
    /// relationships (as a professional, and of patient records linked to the account), the
    /// inactivity clock and every audit record about them. Audited (`person_exported`).
    Export {
        /// Account id or login.
        account: String,
        /// Write the JSON to FILE (mode 0600) instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Erase a person: delete the account with its factors, sessions, consents, memberships and
    /// roles, end its relationships as a professional, and pseudonymise its audit records (the
    /// audit chain still verifies). The same deletion as for inactive accounts. Cannot be undone.
    Erase {
        /// Account id or login.
        account: String,
        /// Do not ask for confirmation (required when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(config: Config, command: &PersonCommand) -> Result<(), String> {
    let state = crate::lifecycle::cli::state(config).await?;
    let result = run_with(&state, command).await;
    // Recorded events must reach the durable log before the process ends.
    super::audit_trail::flush(&state).await;
    result
}

async fn run_with(state: &crate::app::AppState, command: &PersonCommand) -> Result<(), String> {
    match command {
        PersonCommand::Export { account, output } => {
            let found = find(state, account).await.map_err(|e| format!("{account}: {e}"))?;
            let data = export(state, &found.id, "cli", AuditContext::default()).await.map_err(|e| e.to_string())?;
            let json = serde_json::to_string_pretty(&data).map_err(|e| e.to_string())?;
            match output {
                None => println!("{json}"),
                Some(path) => {
                    write_private(path, json.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
                    eprintln!("export of {} written to {}", found.login, path.display());
                }
            }
            Ok(())
        }
        PersonCommand::Erase { account, yes } => {
            let found = find(state, account).await.map_err(|e| format!("{account}: {e}"))?;
            if !yes {
                confirm(&found)?;
            }
            let deletion = delete_person(state, &found, DeletionReason::Erasure, "cli", AuditContext::default())
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "account {} ({}) erased: {} relationship(s) ended, {} grant(s) revoked, {} audit record(s) pseudonymised as {}",
                found.id,
                found.login,
                deletion.relationships_ended,
                deletion.grants_revoked,
                deletion.audit_records_pseudonymised,
                deletion.pseudonym
            );
            Ok(())
        }
    }
}

/// Asks on the terminal; refuses without one (scripts pass --yes).
fn confirm(account: &crate::store::Account) -> Result<(), String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err("refusing to erase without confirmation: standard input is not a terminal; pass --yes".into());
    }
    eprint!(
        "Erase account {} (login {})? Its factors, sessions and relationships go, its audit records are pseudonymised; this cannot be undone. Type the login to confirm: ",
        account.id, account.login
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim() != account.login {
        return Err("not confirmed: nothing was erased".into());
    }
    Ok(())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
