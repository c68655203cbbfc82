//! Relationship lookups remembered between token issuances, so that re-evaluating the details of a
//! grant at each refresh or exchange (and answering the same decision question again) costs no
//! database read.
//!
//! Revocation stays effective at once: any change to a relationship, on any instance, publishes
//! a new *generation* in the ephemeral store (shared through Redis when there are several
//! instances), and an entry is used only while the generation it was read under is still the
//! current one. Reading the generation costs a hash-map lookup in memory, one round trip to Redis.
//! Entries also expire after [`ENTRY_LIFETIME`], which bounds what an edit made to the database
//! behind Habilis' back could leave stale. Professions (practice data) are not cached.
//!
//! Profile assignments are read with the relationships (when some profile requires one) and
//! cached with them: assigning or unassigning a profile publishes a new generation too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ephemeral::SharedEphemeral;
use crate::store::{HabilitationStore, PatientIdentity, ProfessionalKey, RelationshipMatch, StoreResult};

/// The ephemeral-store key of the current generation of relationships.
pub const GENERATION_KEY: &str = "habilitation:relationships:generation";
/// How long a generation marker lives; far longer than any entry.
const GENERATION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long an entry may serve, whatever the generation says.
pub const ENTRY_LIFETIME: Duration = Duration::from_secs(30);
/// Bound on the entries kept; when reached, the cache starts again empty.
const MAX_ENTRIES: usize = 50_000;

/// The relationships found for one professional and one list of patients.
pub type Matches = Arc<Vec<RelationshipMatch>>;

/// One lookup: who, which patients, and whether assignments were read along.
type Key = (Professional, Vec<PatientIdentity>, bool);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Professional {
    AccountId(String),
    Login(String),
}

impl From<ProfessionalKey<'_>> for Professional {
    fn from(key: ProfessionalKey<'_>) -> Self {
        match key {
            ProfessionalKey::AccountId(id) => Professional::AccountId(id.to_string()),
            ProfessionalKey::Login(login) => Professional::Login(login.to_string()),
        }
    }
}

struct Entry {
    /// The generation current when the rows were read (`None`: no change published yet).
    generation: Option<Vec<u8>>,
    read_at: Instant,
    matches: Matches,
}

pub struct RelationshipCache {
    ephemeral: SharedEphemeral,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl RelationshipCache {
    pub fn new(ephemeral: SharedEphemeral) -> RelationshipCache {
        RelationshipCache { ephemeral, entries: Mutex::new(HashMap::new()) }
    }

    /// The professional's relationships with these patients (and, with `with_assignments`, the
    /// profiles assigned for each), from memory while no relationship or assignment changed since
    /// they were read, otherwise from the store.
    pub async fn relationships_with_patients(
        &self,
        store: &dyn HabilitationStore,
        professional: ProfessionalKey<'_>,
        identities: &[PatientIdentity],
        with_assignments: bool,
    ) -> StoreResult<Matches> {
        // Read before the rows: a change landing in between makes the entry stale at once
        // (its generation is the older one), never the other way round.
        let generation = match self.ephemeral.get(GENERATION_KEY).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "relationship generation unreadable: reading relationships from the database");
                return Ok(Arc::new(
                    store.relationships_with_patients(professional, identities, with_assignments).await?,
                ));
            }
        };
        let key = (Professional::from(professional), identities.to_vec(), with_assignments);
        if let Some(entry) = self.lock().get(&key)
            && entry.generation == generation
            && entry.read_at.elapsed() < ENTRY_LIFETIME
        {
            return Ok(entry.matches.clone());
        }
        let read_at = Instant::now();
        let matches = Arc::new(store.relationships_with_patients(professional, identities, with_assignments).await?);
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, Entry { generation, read_at, matches: matches.clone() });
        Ok(matches)
    }

    /// Publishes that relationships changed (after the change is stored): every instance reads
    /// them from the database again. If the ephemeral store cannot be written, other instances
    /// may serve what they hold for up to [`ENTRY_LIFETIME`]; this one forgets everything.
    pub async fn changed(&self) {
        self.lock().clear();
        let marker = uuid::Uuid::new_v4();
        if let Err(e) = self.ephemeral.put(GENERATION_KEY, marker.as_bytes(), GENERATION_LIFETIME).await {
            tracing::error!(
                error = %e,
                "relationship change not published: other instances may use what they hold for up to 30 s"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written: recover the map.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Account, AccountKind, AccountStatus, Patient, Relationship, RelationshipStatus};

    /// Two instances sharing a database and an ephemeral store: each serves repeated lookups from
    /// memory (a change made behind Habilis' back is not seen), and a change published by one is
    /// seen by the other at its very next lookup.
    #[tokio::test]
    async fn a_change_published_by_one_instance_is_seen_by_the_other_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display())];
        urls.extend(crate::testing::postgres_schema_url().await);
        for url in urls {
            let store = crate::store::connect_with(&url, 4).await.unwrap();
            let h = store.habilitations();
            let pro = Account {
                id: uuid::Uuid::new_v4().to_string(),
                kind: AccountKind::Professional,
                login: "899700427885".into(),
                id_nat: Some("899700427885".into()),
                email: None,
                given_name: None,
                family_name: None,
                status: AccountStatus::Active,
                locale: None,
                created_at: 1,
                updated_at: 1,
                last_authenticated_at: None,
            };
            store.insert_account(&pro).await.unwrap();
            let ins = PatientIdentity::Ins { value: "284037512345640".into(), oid: "1.2.250.1.213.1.4.8".into() };
            h.insert_patient(&Patient { id: "pat".into(), identity: ins.clone(), account_id: None, created_at: 1 })
                .await
                .unwrap();
            let relationship = Relationship {
                id: "rel".into(),
                professional_id: pro.id.clone(),
                patient_id: "pat".into(),
                kind: "treating".into(),
                organisation_id: None,
                valid_from: 1,
                valid_until: None,
                status: RelationshipStatus::Active,
                source_client: None,
                source_actor: "test".into(),
                evidence: "{}".into(),
                created_at: 1,
                updated_at: 1,
                revoked_at: None,
                revoked_by: None,
            };
            h.insert_relationship(&relationship).await.unwrap();

            let shared: SharedEphemeral = Arc::new(crate::ephemeral::MemoryStore::new(100));
            let (a, b) = (RelationshipCache::new(shared.clone()), RelationshipCache::new(shared));
            let who = ProfessionalKey::AccountId(&pro.id);
            let patients = [ins.clone()];
            let status = |m: &Matches| m.iter().map(|m| m.relationship.status).collect::<Vec<_>>();
            assert_eq!(
                status(&a.relationships_with_patients(h, who, &patients, false).await.unwrap()),
                [RelationshipStatus::Active]
            );
            assert_eq!(
                status(&b.relationships_with_patients(h, who, &patients, false).await.unwrap()),
                [RelationshipStatus::Active]
            );

            // Revoked in the database without publishing: both still answer from memory.
            assert!(h.revoke_relationship("rel", "test", 2).await.unwrap());
            assert_eq!(
                status(&b.relationships_with_patients(h, who, &patients, false).await.unwrap()),
                [RelationshipStatus::Active],
                "{url}: served from memory"
            );
            // Published by instance a: instance b reads the database again at once.
            a.changed().await;
            assert_eq!(
                status(&b.relationships_with_patients(h, who, &patients, false).await.unwrap()),
                [RelationshipStatus::Revoked],
                "{url}: the other instance sees the change"
            );
            assert_eq!(
                status(&a.relationships_with_patients(h, who, &patients, false).await.unwrap()),
                [RelationshipStatus::Revoked],
                "{url}"
            );

            // Assignments are read (and kept) with the relationships; an assignment published by
            // one instance is seen by the other at once.
            let profile = crate::store::ProfileRecord {
                name: "nurse".into(),
                description: String::new(),
                spec: "{}".into(),
                max_duration: None,
                created_at: 1,
                updated_at: 1,
            };
            h.upsert_profile(&profile).await.unwrap();
            let assigned = |m: &Matches| m.iter().map(|m| m.assigned_profiles.clone()).collect::<Vec<_>>();
            let lookup = b.relationships_with_patients(h, who, &patients, true).await.unwrap();
            assert_eq!(assigned(&lookup), [Vec::<String>::new()], "{url}");
            let assignment = crate::store::ProfileAssignment {
                account_id: pro.id.clone(),
                profile_name: "nurse".into(),
                organisation_id: None,
                assigned_by: "test".into(),
                assigned_at: 3,
            };
            assert!(h.assign_profile(&assignment).await.unwrap());
            let lookup = b.relationships_with_patients(h, who, &patients, true).await.unwrap();
            assert_eq!(assigned(&lookup), [Vec::<String>::new()], "{url}: served from memory");
            a.changed().await;
            let lookup = b.relationships_with_patients(h, who, &patients, true).await.unwrap();
            assert_eq!(assigned(&lookup), [vec!["nurse".to_string()]], "{url}: the other instance sees the assignment");
        }
    }
}
