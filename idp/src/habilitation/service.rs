//! The habilitation service of one instance: the policy engine, the compiled profiles (reloaded
//! when another instance changes them) and the evaluation of `patient_access` requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::policy::{CompiledProfiles, DecisionContext, PolicyEngine, PolicyError, PolicySources, ProfileSpec};
use super::rar::{GrantedAccess, GrantedRelationship, PatientAccess};
use crate::clients::AcrLevel;
use crate::store::{
    Account, AccountKind, PatientIdentity, ProfessionalKey, ProfileRecord, Relationship, RelationshipStatus,
    SharedStore, StoreError,
};

/// A profile as administrators write it (admin API, `habilis profile put`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Relationship kinds covered (from `habilitation.relationship_kinds`).
    pub kinds: Vec<String>,
    /// Allowed actions (`read`, `write`, `comment`, `share`, `message`, `teleconsult`).
    pub actions: Vec<String>,
    /// Data types that may be granted (empty: none may be asked for).
    #[serde(default)]
    pub datatypes: Vec<String>,
    /// The applications (client_ids) the profile applies to.
    pub clients: Vec<String>,
    /// Weakest login allowed: `eidas1`, `eidas2` or `eidas3` (absent: no minimum).
    #[serde(default)]
    pub min_acr: Option<String>,
    /// Profession codes (TRE_G15, e.g. "10" médecin); empty: any profession.
    #[serde(default)]
    pub professions: Vec<String>,
    /// An extra Cedar condition that must hold (see policies/README.md).
    #[serde(default)]
    pub condition: Option<String>,
    /// Longest relationship this profile honours, in seconds from its start (absent: no limit).
    #[serde(default)]
    pub max_duration: Option<i64>,
    /// When true, the profile permits only for professionals an administrator assigned it to
    /// (`/accounts/{id}/profiles`), platform-wide or in the relationship's organisation. Default
    /// false: it applies to every professional whose relationship matches.
    #[serde(default)]
    pub requires_assignment: bool,
}

impl ProfileDefinition {
    pub fn spec(&self) -> Result<ProfileSpec, HabilitationError> {
        let min_acr_level = match self.min_acr.as_deref() {
            None => 0,
            Some(level) => match AcrLevel::parse(level) {
                Some(_) => acr_rank(Some(level)),
                None => {
                    return Err(HabilitationError::Profile {
                        profile: self.name.clone(),
                        reason: "min_acr must be eidas1, eidas2 or eidas3".into(),
                    });
                }
            },
        };
        Ok(ProfileSpec {
            name: self.name.clone(),
            kinds: self.kinds.clone(),
            actions: self.actions.clone(),
            datatypes: self.datatypes.clone(),
            clients: self.clients.clone(),
            min_acr_level,
            professions: self.professions.clone(),
            condition: self.condition.clone(),
            requires_assignment: self.requires_assignment,
        })
    }

    fn of(spec: ProfileSpec, description: String, max_duration: Option<i64>) -> ProfileDefinition {
        ProfileDefinition {
            min_acr: level_of_rank(spec.min_acr_level).map(|l| l.as_str().to_string()),
            name: spec.name,
            description,
            kinds: spec.kinds,
            actions: spec.actions,
            datatypes: spec.datatypes,
            clients: spec.clients,
            professions: spec.professions,
            condition: spec.condition,
            max_duration,
            requires_assignment: spec.requires_assignment,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HabilitationError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("profile {profile}: {reason}")]
    Profile { profile: String, reason: String },
}

/// Why a requested detail is not granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No relationship (of the requested kind) links the professional to the patient.
    NoRelationship,
    /// A relationship exists but the policy needs a stronger login.
    InsufficientAcr(AcrLevel),
    /// A relationship exists but no profile allows the request; the deciding policies.
    Forbidden(Vec<String>),
    /// Only professionals receive patient access.
    NotAProfessional,
}

impl Denial {
    pub fn describe(&self) -> String {
        match self {
            Denial::NoRelationship => "no active relationship with this patient allows it".into(),
            Denial::InsufficientAcr(level) => format!("a login at {} or stronger is required", level.as_str()),
            Denial::Forbidden(reasons) if reasons.is_empty() => "no habilitation profile of this app allows it".into(),
            Denial::Forbidden(reasons) => format!("refused by policy ({})", reasons.join(", ")),
            Denial::NotAProfessional => "only professionals are granted patient access".into(),
        }
    }
}

/// The base rule (policies/base.cedar) refusing a login weaker than the profile's minimum.
const ACR_RULE: &str = "acr_below_profile_minimum";

pub fn acr_rank(acr: Option<&str>) -> i64 {
    match acr.and_then(AcrLevel::parse) {
        None => 0,
        Some(AcrLevel::Eidas1) => 1,
        Some(AcrLevel::Eidas2) => 2,
        Some(AcrLevel::Eidas3) => 3,
    }
}

fn level_of_rank(rank: i64) -> Option<AcrLevel> {
    match rank {
        1 => Some(AcrLevel::Eidas1),
        2 => Some(AcrLevel::Eidas2),
        3 => Some(AcrLevel::Eidas3),
        _ => None,
    }
}

pub struct Habilitations {
    engine: PolicyEngine,
    compiled: ArcSwap<CompiledProfiles>,
    definitions: ArcSwap<Vec<ProfileDefinition>>,
    /// (count, latest change) of the profiles table at the last load.
    loaded_count: AtomicI64,
    loaded_latest: AtomicI64,
    pub relationship_kinds: Vec<String>,
    pub production: bool,
    /// Relationship lookups kept between issuances; set by the server (not by CLI commands).
    relationship_cache: std::sync::OnceLock<super::cache::RelationshipCache>,
}

impl Habilitations {
    /// Loads the policies (embedded or `habilitation.policies_dir`) and the stored profiles. An
    /// invalid policy or stored profile stops the start with Cedar's diagnostics.
    pub async fn load(config: &crate::config::Config, store: &SharedStore) -> Result<Habilitations, HabilitationError> {
        let sources = match &config.habilitation.policies_dir {
            Some(dir) => PolicySources::from_dir(dir)?,
            None => PolicySources::embedded(),
        };
        let engine = PolicyEngine::new(&sources)?;
        let empty = engine.compile(&[])?;
        let habilitations = Habilitations {
            engine,
            compiled: ArcSwap::from_pointee(empty),
            definitions: ArcSwap::from_pointee(Vec::new()),
            loaded_count: AtomicI64::new(-1),
            loaded_latest: AtomicI64::new(-1),
            relationship_kinds: config.habilitation.relationship_kinds.clone(),
            production: config.is_production(),
            relationship_cache: std::sync::OnceLock::new(),
        };
        habilitations.reload(store).await?;
        Ok(habilitations)
    }

    pub fn compiled(&self) -> Arc<CompiledProfiles> {
        self.compiled.load_full()
    }

    pub fn definitions(&self) -> Arc<Vec<ProfileDefinition>> {
        self.definitions.load_full()
    }

    async fn reload(&self, store: &SharedStore) -> Result<(), HabilitationError> {
        let version = store.habilitations().profiles_version().await?;
        let records = store.habilitations().profiles().await?;
        let definitions = records.iter().map(definition_of).collect::<Result<Vec<_>, _>>()?;
        let specs: Vec<ProfileSpec> = definitions.iter().map(|d| d.spec()).collect::<Result<_, _>>()?;
        let compiled = self.engine.compile(&specs)?;
        self.compiled.store(Arc::new(compiled));
        self.definitions.store(Arc::new(definitions));
        self.loaded_count.store(version.0, Ordering::SeqCst);
        self.loaded_latest.store(version.1, Ordering::SeqCst);
        Ok(())
    }

    /// Reloads when another instance changed the profiles. Returns whether it reloaded.
    pub async fn refresh_if_changed(&self, store: &SharedStore) -> Result<bool, HabilitationError> {
        let (count, latest) = store.habilitations().profiles_version().await?;
        if count == self.loaded_count.load(Ordering::SeqCst) && latest == self.loaded_latest.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.reload(store).await?;
        Ok(true)
    }

    /// Checks a profile (alone and with every other one) and stores it; refused with Cedar's
    /// diagnostics when invalid. Returns the previous definition, if any.
    pub async fn put_profile(
        &self,
        store: &SharedStore,
        definition: ProfileDefinition,
        now: i64,
    ) -> Result<Option<ProfileDefinition>, HabilitationError> {
        let name = definition.name.clone();
        let spec = definition.spec()?;
        for kind in &definition.kinds {
            if !self.relationship_kinds.contains(kind) {
                return Err(HabilitationError::Profile {
                    profile: name,
                    reason: format!(
                        "relationship kind `{kind}` is not one of habilitation.relationship_kinds ({})",
                        self.relationship_kinds.join(", ")
                    ),
                });
            }
        }
        if definition.max_duration.is_some_and(|d| d <= 0) {
            return Err(HabilitationError::Profile { profile: name, reason: "max_duration must be positive".into() });
        }
        let current = self.definitions();
        let previous = current.iter().find(|d| d.name == name).cloned();
        let mut specs: Vec<ProfileSpec> =
            current.iter().filter(|d| d.name != name).map(|d| d.spec()).collect::<Result<_, _>>()?;
        specs.push(spec.clone());
        self.engine.compile(&specs)?;
        let record = ProfileRecord {
            name: name.clone(),
            description: definition.description.clone(),
            spec: serde_json::to_string(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            max_duration: definition.max_duration,
            created_at: now,
            updated_at: now.max(self.loaded_latest.load(Ordering::SeqCst) + 1),
        };
        store.habilitations().upsert_profile(&record).await?;
        self.reload(store).await?;
        Ok(previous)
    }

    pub async fn delete_profile(&self, store: &SharedStore, name: &str) -> Result<bool, HabilitationError> {
        let deleted = store.habilitations().delete_profile(name).await?;
        self.reload(store).await?;
        if deleted {
            // Its assignments went with it (ON DELETE CASCADE): cached lookups must not lend them
            // to a profile re-created under the same name.
            self.relationships_changed().await;
        }
        Ok(deleted)
    }

    /// The weakest login any profile of this client needs to grant `request` (None: no minimum).
    /// `Err` when no profile of the client could ever grant it: the request fails before login.
    pub fn required_acr(&self, client_id: &str, request: &PatientAccess) -> Result<Option<AcrLevel>, Denial> {
        let compiled = self.compiled();
        compiled
            .profiles()
            .iter()
            .filter(|p| could_grant(p, client_id, request))
            .map(|p| p.min_acr_level)
            .min()
            .map(level_of_rank)
            .ok_or(Denial::Forbidden(Vec::new()))
    }

    /// Evaluates one requested detail for `account` acting through `client_id` at login level `acr`.
    pub async fn evaluate(
        &self,
        store: &SharedStore,
        request: &PatientAccess,
        account: &Account,
        client_id: &str,
        acr: Option<&str>,
        now: i64,
    ) -> Result<GrantedAccess, Denial> {
        let mut outcomes = self
            .evaluate_all(store, std::slice::from_ref(request), Professional::Account(account), client_id, acr, now)
            .await;
        outcomes.pop().unwrap_or(Err(Denial::NoRelationship))
    }

    /// Evaluates requested details for one professional acting through `client_id` at login level
    /// `acr`, with one read of the store for all of them. Outcomes are in the order of `requests`.
    pub async fn evaluate_all(
        &self,
        store: &SharedStore,
        requests: &[PatientAccess],
        professional: Professional<'_>,
        client_id: &str,
        acr: Option<&str>,
        now: i64,
    ) -> Vec<Result<GrantedAccess, Denial>> {
        if let Professional::Account(account) = professional
            && account.kind != AccountKind::Professional
        {
            return requests.iter().map(|_| Err(Denial::NotAProfessional)).collect();
        }
        let compiled = self.compiled();
        let with_assignments = compiled.profiles().iter().any(|p| p.requires_assignment);
        let matched = match self.matched_relationships(store, requests, professional, with_assignments).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "habilitation lookup failed");
                return requests.iter().map(|_| Err(Denial::Forbidden(vec!["store_unavailable".into()]))).collect();
            }
        };
        let definitions = self.definitions();
        let context = DecisionContext {
            client: client_id.to_string(),
            acr_level: acr_rank(acr),
            now,
            datatypes: Vec::new(),
            production: self.production,
        };
        requests
            .iter()
            .map(|request| {
                let facts = Facts {
                    relationships: matched.of(&request.patient.identity()),
                    professions: matched.professions.clone(),
                    test_identity: request.patient.is_test_identity(),
                };
                evaluate_with(&compiled, &definitions, request, &facts, context.clone())
            })
            .collect()
    }

    /// The professional's relationships with the requested patients (with, when
    /// `with_assignments`, the profiles assigned for each; and, when a profile filters on
    /// professions, the professional's professions).
    async fn matched_relationships(
        &self,
        store: &SharedStore,
        requests: &[PatientAccess],
        professional: Professional<'_>,
        with_assignments: bool,
    ) -> Result<Matched, StoreError> {
        let habilitations = store.habilitations();
        let identities: Vec<PatientIdentity> = requests.iter().map(|r| r.patient.identity()).collect();
        let key = match professional {
            Professional::Account(account) => ProfessionalKey::AccountId(&account.id),
            Professional::IdNat(id_nat) => ProfessionalKey::Login(id_nat),
        };
        let relationships = match self.relationship_cache.get() {
            Some(cache) => cache.relationships_with_patients(habilitations, key, &identities, with_assignments).await?,
            None => std::sync::Arc::new(
                habilitations.relationships_with_patients(key, &identities, with_assignments).await?,
            ),
        };
        // Practice data only matters to profiles restricted to some professions.
        let needs_professions = self.compiled().profiles().iter().any(|p| !p.professions.is_empty());
        let professional_id = relationships.first().map(|m| m.relationship.professional_id.clone());
        let practice = match professional_id {
            Some(id) if needs_professions => habilitations.practice_of(&id).await?,
            _ => None,
        };
        let professions = practice
            .and_then(|json| serde_json::from_str::<super::professional::PracticeRecord>(&json).ok())
            .map(|p| p.professions())
            .unwrap_or_default();
        Ok(Matched { relationships, professions })
    }

    /// Keeps relationship lookups in memory between issuances, invalidated through `ephemeral`
    /// (see [`super::cache`]). The server calls this once at start.
    pub fn enable_relationship_cache(&self, ephemeral: crate::ephemeral::SharedEphemeral) {
        let _ = self.relationship_cache.set(super::cache::RelationshipCache::new(ephemeral));
    }

    /// To call after any change to a relationship is stored: the next decisions, here and on
    /// every other instance, read relationships from the database again.
    pub async fn relationships_changed(&self) {
        if let Some(cache) = self.relationship_cache.get() {
            cache.changed().await;
        }
    }

    /// To call after a profile assignment is stored or removed: assignments are cached with the
    /// relationships, so the next decisions everywhere read both again.
    pub async fn assignments_changed(&self) {
        self.relationships_changed().await;
    }

    /// Whether the relationship behind a granted detail still allows it (introspection), and,
    /// when its profile requires assignment, whether the professional still holds it there.
    pub async fn still_granted(&self, store: &SharedStore, granted: &GrantedAccess, now: i64) -> bool {
        let relationship = match store.habilitations().relationship(&granted.relationship.id).await {
            Ok(Some(r)) if r.status_at(now) == RelationshipStatus::Active && r.valid_from <= now => r,
            Ok(_) => return false,
            Err(e) => {
                tracing::error!(error = %e, "relationship lookup failed during introspection");
                return false;
            }
        };
        let requires_assignment = self.compiled().profile(&granted.profile).is_none_or(|p| p.requires_assignment);
        if !requires_assignment {
            return true;
        }
        match store.habilitations().assignments_of_account(&relationship.professional_id).await {
            Ok(assignments) => assignments.iter().any(|a| {
                a.profile_name == granted.profile
                    && a.organisation_id.as_ref().is_none_or(|o| relationship.organisation_id.as_ref() == Some(o))
            }),
            Err(e) => {
                tracing::error!(error = %e, "assignment lookup failed during introspection");
                false
            }
        }
    }
}

fn definition_of(record: &ProfileRecord) -> Result<ProfileDefinition, HabilitationError> {
    let spec: ProfileSpec = serde_json::from_str(&record.spec)
        .map_err(|e| HabilitationError::Profile { profile: record.name.clone(), reason: e.to_string() })?;
    Ok(ProfileDefinition::of(spec, record.description.clone(), record.max_duration))
}

/// A cheap pre-filter: the profile applies to the client, covers the relationship kind asked
/// for (if any) and one of the actions. Cedar decides; this only avoids hopeless evaluations.
fn could_grant(profile: &ProfileSpec, client_id: &str, request: &PatientAccess) -> bool {
    profile.clients.iter().any(|c| c == client_id)
        && request.relationship.as_ref().is_none_or(|k| profile.kinds.contains(k))
        && request.actions.iter().any(|a| profile.actions.contains(a))
}

/// Who a decision is about: an account already loaded (token issuance), or a professional named
/// by idNat (decision API: looked up in the same read as the relationships, active accounts only).
#[derive(Clone, Copy)]
pub enum Professional<'a> {
    Account(&'a Account),
    IdNat(&'a str),
}

struct Matched {
    relationships: super::cache::Matches,
    professions: Vec<String>,
}

impl Matched {
    /// The relationships with the patient of `identity`, each with the profiles assigned for it.
    fn of(&self, identity: &PatientIdentity) -> Vec<(Relationship, Vec<String>)> {
        self.relationships
            .iter()
            .filter(|m| m.identity == *identity)
            .map(|m| (m.relationship.clone(), m.assigned_profiles.clone()))
            .collect()
    }
}

#[derive(Default)]
struct Facts {
    /// Each relationship with the profiles assigned to the professional that hold for it.
    relationships: Vec<(Relationship, Vec<String>)>,
    professions: Vec<String>,
    test_identity: bool,
}

/// The best grant among (relationship, profile) pairs: the one allowing the most actions.
fn evaluate_with(
    compiled: &CompiledProfiles,
    definitions: &[ProfileDefinition],
    request: &PatientAccess,
    facts: &Facts,
    mut context: DecisionContext,
) -> Result<GrantedAccess, Denial> {
    let candidates: Vec<&(Relationship, Vec<String>)> = facts
        .relationships
        .iter()
        .filter(|(r, _)| request.relationship.as_ref().is_none_or(|k| &r.kind == k))
        .collect();
    if candidates.is_empty() {
        return Err(Denial::NoRelationship);
    }
    let mut best: Option<GrantedAccess> = None;
    let mut reasons: Vec<String> = Vec::new();
    let mut acr_needed: Option<i64> = None;
    for (relationship, assigned_profiles) in candidates {
        for profile in compiled.profiles().iter().filter(|p| p.kinds.contains(&relationship.kind)) {
            if !profile.clients.contains(&context.client) {
                continue;
            }
            let max_duration = definitions.iter().find(|d| d.name == profile.name).and_then(|d| d.max_duration);
            let facts = super::policy::RelationshipFacts {
                id: relationship.id.clone(),
                kind: relationship.kind.clone(),
                status: relationship.status_at(context.now).as_str().to_string(),
                valid_from: relationship.valid_from,
                valid_until: match (relationship.valid_until, max_duration) {
                    (Some(until), Some(max)) => Some(until.min(relationship.valid_from.saturating_add(max))),
                    (None, Some(max)) => Some(relationship.valid_from.saturating_add(max)),
                    (until, None) => until,
                },
                professional_professions: facts.professions.clone(),
                patient_test_identity: facts.test_identity,
                organisation: relationship.organisation_id.clone(),
                professional_profiles: assigned_profiles.clone(),
            };
            let datatypes: Vec<String> = if request.datatypes.is_empty() {
                profile.datatypes.clone()
            } else {
                request.datatypes.iter().filter(|d| profile.datatypes.contains(d)).cloned().collect()
            };
            if datatypes.is_empty() && !profile.datatypes.is_empty() {
                reasons.push(format!("profile:{} (datatypes)", profile.name));
                continue;
            }
            context.datatypes = datatypes.clone();
            let mut actions = Vec::new();
            for action in &request.actions {
                let decision = compiled.evaluate(&profile.name, action, &facts, &context);
                if decision.allowed {
                    actions.push(action.clone());
                } else {
                    // Refused only for the login level: a step-up would grant it.
                    // (A forbid hides whether the permit matched, so the action is checked here too.)
                    if decision.reasons == [ACR_RULE] && profile.actions.contains(action) {
                        acr_needed = Some(acr_needed.map_or(profile.min_acr_level, |n| n.min(profile.min_acr_level)));
                    }
                    for reason in decision.reasons {
                        if !reasons.contains(&reason) {
                            reasons.push(reason);
                        }
                    }
                }
            }
            if !actions.is_empty() && best.as_ref().is_none_or(|b| b.actions.len() < actions.len()) {
                best = Some(GrantedAccess {
                    kind: request.kind.clone(),
                    patient: request.patient.clone(),
                    actions,
                    datatypes,
                    relationship: GrantedRelationship { id: relationship.id.clone(), kind: relationship.kind.clone() },
                    profile: profile.name.clone(),
                    purpose: request.purpose.clone(),
                });
            }
        }
    }
    if let Some(granted) = best {
        return Ok(granted);
    }
    if let Some(level) = acr_needed.and_then(level_of_rank) {
        return Err(Denial::InsufficientAcr(level));
    }
    Err(Denial::Forbidden(reasons))
}

/// Reloads the profiles every `interval` when another instance changed them, until dropped.
pub fn spawn_refresher(
    habilitations: &Arc<Habilitations>,
    store: SharedStore,
    interval: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(habilitations);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(habilitations) = weak.upgrade() else { break };
            if let Err(e) = habilitations.refresh_if_changed(&store).await {
                tracing::warn!(error = %e, "habilitation profiles not reloaded; keeping the current ones");
            }
        }
    })
}

/// The admin API's "who would be allowed" preview of a profile.
impl Habilitations {
    /// Evaluates `requests` of one professional as if `candidate` were the only profile, without
    /// storing it, and as the stored profiles decide now: `(candidate, current)` per request, in
    /// order. The candidate is checked as [`Habilitations::put_profile`] checks it (relationship
    /// kinds, `max_duration`, `min_acr`, Cedar validation); the relationships are read as for a
    /// real decision.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    pub async fn preview(
        &self,
        store: &SharedStore,
        candidate: &ProfileDefinition,
        requests: &[PatientAccess],
        professional: Professional<'_>,
        client_id: &str,
        acr: Option<&str>,
        now: i64,
    ) -> Result<Vec<(Result<GrantedAccess, Denial>, Result<GrantedAccess, Denial>)>, HabilitationError> {
        let spec = candidate.spec()?;
        if let Some(kind) = candidate.kinds.iter().find(|k| !self.relationship_kinds.contains(k)) {
            return Err(HabilitationError::Profile {
                profile: candidate.name.clone(),
                reason: format!(
                    "relationship kind `{kind}` is not one of habilitation.relationship_kinds ({})",
                    self.relationship_kinds.join(", ")
                ),
            });
        }
        if candidate.max_duration.is_some_and(|d| d <= 0) {
            return Err(HabilitationError::Profile {
                profile: candidate.name.clone(),
                reason: "max_duration must be positive".into(),
            });
        }
        let compiled = self.engine.compile(std::slice::from_ref(&spec))?;
        let definitions = vec![candidate.clone()];
        let current = self.evaluate_all(store, requests, professional, client_id, acr, now).await;
        if let Professional::Account(account) = professional
            && account.kind != AccountKind::Professional
        {
            return Ok(current.into_iter().map(|c| (Err(Denial::NotAProfessional), c)).collect());
        }
        // Assignments are read when the candidate or a stored profile needs them.
        let with_assignments =
            spec.requires_assignment || self.compiled().profiles().iter().any(|p| p.requires_assignment);
        let matched = self.matched_relationships(store, requests, professional, with_assignments).await?;
        // Practice data is read only when a stored profile filters on professions: the candidate
        // may be the first one that does.
        let mut professions = matched.professions.clone();
        if !spec.professions.is_empty() && professions.is_empty() {
            let professional_id = matched.relationships.first().map(|m| m.relationship.professional_id.clone());
            if let Some(id) = professional_id {
                professions = store
                    .habilitations()
                    .practice_of(&id)
                    .await?
                    .and_then(|json| serde_json::from_str::<super::professional::PracticeRecord>(&json).ok())
                    .map(|p| p.professions())
                    .unwrap_or_default();
            }
        }
        let context = DecisionContext {
            client: client_id.to_string(),
            acr_level: acr_rank(acr),
            now,
            datatypes: Vec::new(),
            production: self.production,
        };
        let with_candidate = requests.iter().map(|request| {
            let facts = Facts {
                relationships: matched.of(&request.patient.identity()),
                professions: professions.clone(),
                test_identity: request.patient.is_test_identity(),
            };
            evaluate_with(&compiled, &definitions, request, &facts, context.clone())
        });
        Ok(with_candidate.zip(current).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(name: &str, condition: Option<&str>) -> ProfileDefinition {
        serde_json::from_value(serde_json::json!({
            "name": name, "kinds": ["treating"], "actions": ["read"], "clients": ["app"],
            "min_acr": "eidas2", "condition": condition,
        }))
        .unwrap()
    }

    /// Two instances on one database: a profile changed through one is used by the other after
    /// its next refresh; invalid profiles are refused with the Cedar diagnostics and not stored.
    #[tokio::test]
    async fn profiles_reach_other_instances_and_invalid_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display())];
        urls.extend(crate::testing::postgres_schema_url().await);
        for url in urls {
            let store = crate::store::connect_with(&url, 4).await.unwrap();
            let config = crate::config::Config::default();
            let a = Habilitations::load(&config, &store).await.unwrap();
            let b = Habilitations::load(&config, &store).await.unwrap();
            assert!(a.put_profile(&store, definition("reader", None), 100).await.unwrap().is_none());
            assert!(b.compiled().profile("reader").is_none());
            assert!(b.refresh_if_changed(&store).await.unwrap(), "{url}");
            assert_eq!(b.compiled().profile("reader").map(|p| p.min_acr_level), Some(2));
            assert!(!b.refresh_if_changed(&store).await.unwrap(), "no change, no reload");

            let refused = a.put_profile(&store, definition("broken", Some("resource.nope == 1")), 101).await;
            let message = refused.expect_err("an unknown attribute").to_string();
            assert!(message.contains("nope"), "Cedar says what is wrong: {message}");
            let mut unknown_kind = definition("odd", None);
            unknown_kind.kinds = vec!["neighbour".into()];
            assert!(
                a.put_profile(&store, unknown_kind, 102).await.unwrap_err().to_string().contains("relationship kind")
            );
            let mut bad_acr = definition("acr", None);
            bad_acr.min_acr = Some("gold".into());
            assert!(a.put_profile(&store, bad_acr, 103).await.is_err());
            assert_eq!(store.habilitations().profiles().await.unwrap().len(), 1, "refused profiles are not stored");

            assert!(a.delete_profile(&store, "reader").await.unwrap());
            assert!(b.refresh_if_changed(&store).await.unwrap());
            assert!(b.compiled().profile("reader").is_none(), "{url}");
        }
    }

    #[test]
    fn definitions_map_acr_names_to_levels_and_back() {
        let spec = definition("x", None).spec().unwrap();
        assert_eq!(spec.min_acr_level, 2);
        assert_eq!(ProfileDefinition::of(spec, String::new(), None).min_acr.as_deref(), Some("eidas2"));
    }
}
