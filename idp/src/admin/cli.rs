//! `habilis admin grant|revoke|list`: administration roles from the command line (the first
//! platform administrator of a deployment is made here, or is an account of kind administrator).

use clap::{Subcommand, ValueEnum};

use crate::audit::{Audit, AuditEvent};
use crate::store::{Account, AdminRole, RoleGrant, SharedStore};

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Grant a role to an account: platform_admin, org_admin (with --organisation) or auditor.
    Grant {
        /// The account's login (idNat, email…).
        login: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The organisation id, for org_admin.
        #[arg(long)]
        organisation: Option<String>,
    },
    /// Revoke a role (the same arguments as the grant).
    Revoke {
        login: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long)]
        organisation: Option<String>,
    },
    /// List role grants, of every account or of one.
    List {
        /// Only this account's (login).
        login: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    #[value(name = "platform_admin")]
    PlatformAdmin,
    #[value(name = "org_admin")]
    OrgAdmin,
    #[value(name = "auditor")]
    Auditor,
}

impl From<RoleArg> for AdminRole {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::PlatformAdmin => AdminRole::PlatformAdmin,
            RoleArg::OrgAdmin => AdminRole::OrgAdmin,
            RoleArg::Auditor => AdminRole::Auditor,
        }
    }
}

/// Who the audit log names for changes made here.
const CLI_ACTOR: &str = "cli";

/// `audit` is the durable audit service of the command (the caller flushes it before exiting).
pub async fn run(store: SharedStore, audit: &Audit, command: &AdminCommand) -> Result<(), String> {
    match command {
        AdminCommand::Grant { login, role, organisation } => {
            let account = find(&store, login).await?;
            let grant = super::roles::grant_role(
                store.as_ref(),
                &account.id,
                (*role).into(),
                organisation.as_deref(),
                CLI_ACTOR,
                crate::unix_now(),
            )
            .await
            .map_err(|e| e.description.into_owned())?;
            audit_change(audit, &grant, false);
            println!("{} is now {}", account.login, describe(&grant));
            Ok(())
        }
        AdminCommand::Revoke { login, role, organisation } => {
            let account = find(&store, login).await?;
            let role: AdminRole = (*role).into();
            let grants = store.admin().roles_of(&account.id).await.map_err(|e| e.to_string())?;
            let Some(grant) =
                grants.into_iter().find(|g| g.role == role && g.organisation_id.as_deref() == organisation.as_deref())
            else {
                return Err(format!("{} does not hold this role; see `habilis admin list {login}`", account.login));
            };
            store.admin().delete_role(&grant.id).await.map_err(|e| e.to_string())?;
            audit_change(audit, &grant, true);
            println!("{} is no longer {}", account.login, describe(&grant));
            Ok(())
        }
        AdminCommand::List { login } => {
            let grants = match login {
                Some(login) => {
                    let account = find(&store, login).await?;
                    store.admin().roles_of(&account.id).await
                }
                None => store.admin().list_roles(None).await,
            }
            .map_err(|e| e.to_string())?;
            if grants.is_empty() {
                println!("no role granted (accounts of kind administrator are platform administrators)");
                return Ok(());
            }
            println!("{:<36} {:<36} {:<15} {:<36} GRANTED BY", "ID", "ACCOUNT", "ROLE", "ORGANISATION");
            for g in grants {
                println!(
                    "{:<36} {:<36} {:<15} {:<36} {}",
                    g.id,
                    g.account_id,
                    g.role.as_str(),
                    g.organisation_id.as_deref().unwrap_or("-"),
                    g.granted_by
                );
            }
            Ok(())
        }
    }
}

async fn find(store: &SharedStore, login: &str) -> Result<Account, String> {
    let normalised = crate::authn::login::normalise_login(login);
    store
        .account_by_login(&normalised)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no account with login {normalised}; see `habilis user list`"))
}

fn describe(grant: &RoleGrant) -> String {
    match &grant.organisation_id {
        Some(org) => format!("{} of organisation {org}", grant.role.as_str()),
        None => grant.role.as_str().to_string(),
    }
}

/// The CLI has no running server's audit subscribers; the record still reaches the audit log
/// through the `habilis::audit` tracing target.
fn audit_change(audit: &Audit, grant: &RoleGrant, revoked: bool) {
    let view = super::roles::RoleView::from(grant.clone());
    let json = serde_json::to_string(&view).ok();
    let (before, after) = if revoked { (json, None) } else { (None, json) };
    audit.record(
        AuditEvent::AdminRoleChanged { account_id: grant.account_id.clone(), actor: CLI_ACTOR.into(), before, after },
        Default::default(),
    );
}
