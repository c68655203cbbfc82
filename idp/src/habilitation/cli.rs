//! `habilis profile …` (habilitation profiles) and `habilis import professionals FILE`.

use std::path::PathBuf;

use clap::Subcommand;

use super::professional::parse_professionals_csv;
use super::service::{Habilitations, ProfileDefinition};
use crate::config::Config;
use crate::store::{Account, AccountKind, AccountStatus, SharedStore, StoreError};

#[derive(Subcommand, Debug)]
pub enum ProfileCommand {
    /// Create or replace profiles from a JSON file (one profile object or an array of them; see
    /// policies/README.md). Each is validated by Cedar first: an invalid one is refused with the
    /// diagnostics and nothing is written for it. Running servers pick the change up within a second.
    Put { file: PathBuf },
    /// List profiles.
    List,
    /// Print one profile as JSON.
    Show { name: String },
    /// Remove a profile (tokens issued under it lose its details at their next refresh).
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Import professionals' practice data from a CSV file (columns: see README "Importing
    /// professionals"). Creates missing accounts as invited professionals (login = idNat; the card
    /// or an invitation activates them) and replaces the practice data of existing ones. The whole
    /// file is checked before anything is written.
    Professionals {
        file: PathBuf,
        /// Check the file and print what would change, without writing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn profile_command(config: &Config, store: SharedStore, command: &ProfileCommand) -> Result<(), String> {
    let habilitations = Habilitations::load(config, &store).await.map_err(|e| e.to_string())?;
    let now = crate::unix_now();
    match command {
        ProfileCommand::Put { file } => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
            let items = match value {
                serde_json::Value::Array(items) => items,
                single => vec![single],
            };
            let mut failures = 0;
            for (i, item) in items.into_iter().enumerate() {
                let definition: ProfileDefinition = match serde_json::from_value(item) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("profile #{}: {e}", i + 1);
                        failures += 1;
                        continue;
                    }
                };
                let name = definition.name.clone();
                match habilitations.put_profile(&store, definition, now).await {
                    Ok(previous) => println!("{} {name}", if previous.is_some() { "replaced" } else { "created" }),
                    Err(e) => {
                        eprintln!("refused: {e}");
                        failures += 1;
                    }
                }
            }
            if failures > 0 { Err(format!("{failures} profile(s) refused; fix them and run again")) } else { Ok(()) }
        }
        ProfileCommand::List => {
            println!("{:<24} {:<8} {:<40} {:<30} CLIENTS", "NAME", "MIN ACR", "KINDS", "ACTIONS");
            for d in habilitations.definitions().iter() {
                println!(
                    "{:<24} {:<8} {:<40} {:<30} {}",
                    d.name,
                    d.min_acr.as_deref().unwrap_or("-"),
                    d.kinds.join(","),
                    d.actions.join(","),
                    d.clients.join(",")
                );
            }
            Ok(())
        }
        ProfileCommand::Show { name } => match habilitations.definitions().iter().find(|d| &d.name == name) {
            Some(d) => {
                println!("{}", serde_json::to_string_pretty(d).map_err(|e| e.to_string())?);
                Ok(())
            }
            None => Err(format!("no profile named {name}; see `habilis profile list`")),
        },
        ProfileCommand::Remove { name } => {
            if habilitations.delete_profile(&store, name).await.map_err(|e| e.to_string())? {
                println!("removed {name}");
                Ok(())
            } else {
                Err(format!("no profile named {name}; see `habilis profile list`"))
            }
        }
    }
}

pub async fn import_command(store: SharedStore, command: &ImportCommand) -> Result<(), String> {
    let ImportCommand::Professionals { file, dry_run } = command;
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let professionals = match parse_professionals_csv(&bytes) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", file.display());
            }
            return Err(format!("{} error(s) in {}; nothing was imported", errors.len(), file.display()));
        }
    };
    let progress = indicatif::ProgressBar::new(professionals.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} professionals {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut created, mut updated) = (0u64, 0u64);
    let now = crate::unix_now();
    for p in &professionals {
        let existing = store.account_by_login(&p.id_nat).await.map_err(|e| e.to_string())?;
        let account_id = match existing {
            Some(a) if a.kind == AccountKind::Professional => {
                updated += 1;
                a.id
            }
            Some(_) => {
                progress.abandon();
                return Err(format!("login {} belongs to an account that is not a professional", p.id_nat));
            }
            None => {
                created += 1;
                let account = Account {
                    id: uuid::Uuid::new_v4().to_string(),
                    kind: AccountKind::Professional,
                    login: p.id_nat.clone(),
                    id_nat: Some(p.id_nat.clone()),
                    email: p.email.clone(),
                    given_name: Some(p.given_name.clone()),
                    family_name: Some(p.family_name.clone()),
                    status: AccountStatus::Invited,
                    locale: None,
                    created_at: now,
                    updated_at: now,
                    last_authenticated_at: None,
                };
                if !dry_run {
                    store.insert_account(&account).await.map_err(|e: StoreError| e.to_string())?;
                }
                account.id
            }
        };
        if !dry_run {
            let practice = serde_json::to_string(&p.practice).map_err(|e| e.to_string())?;
            store.habilitations().upsert_practice(&account_id, &practice, now).await.map_err(|e| e.to_string())?;
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let verb = if *dry_run { "would be" } else { "were" };
    println!(
        "{} professionals read: {created} {verb} created (invited), {updated} {verb} updated{}",
        professionals.len(),
        if *dry_run { " (dry run: nothing written)" } else { "" }
    );
    Ok(())
}
