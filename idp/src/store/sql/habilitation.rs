//! [`HabilitationStore`] in SQL, for both backends (same macro pattern as the main store).

use super::*;

#[derive(sqlx::FromRow)]
struct PatientRow {
    id: String,
    ins_value: Option<String>,
    ins_oid: Option<String>,
    local_id: Option<String>,
    namespace: Option<String>,
    account_id: Option<String>,
    created_at: i64,
}

impl TryFrom<PatientRow> for Patient {
    type Error = StoreError;
    fn try_from(r: PatientRow) -> StoreResult<Patient> {
        let identity = match (r.ins_value, r.ins_oid, r.local_id, r.namespace) {
            (Some(value), Some(oid), _, _) => PatientIdentity::Ins { value, oid },
            (_, _, Some(local_id), Some(namespace)) => PatientIdentity::Local { local_id, namespace },
            _ => return Err(StoreError::Corrupt(format!("patient {} has no identity", r.id))),
        };
        Ok(Patient { id: r.id, identity, account_id: r.account_id, created_at: r.created_at })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RelationshipRow {
    id: String,
    professional_id: String,
    patient_id: String,
    kind: String,
    organisation_id: Option<String>,
    valid_from: i64,
    valid_until: Option<i64>,
    status: String,
    source_client: Option<String>,
    source_actor: String,
    evidence: String,
    created_at: i64,
    updated_at: i64,
    revoked_at: Option<i64>,
    revoked_by: Option<String>,
}

impl TryFrom<RelationshipRow> for Relationship {
    type Error = StoreError;
    fn try_from(r: RelationshipRow) -> StoreResult<Relationship> {
        let status = match r.status.as_str() {
            "active" => RelationshipStatus::Active,
            "revoked" => RelationshipStatus::Revoked,
            other => return Err(StoreError::Corrupt(format!("relationship {}: status {other}", r.id))),
        };
        Ok(Relationship {
            id: r.id,
            professional_id: r.professional_id,
            patient_id: r.patient_id,
            kind: r.kind,
            organisation_id: r.organisation_id,
            valid_from: r.valid_from,
            valid_until: r.valid_until,
            status,
            source_client: r.source_client,
            source_actor: r.source_actor,
            evidence: r.evidence,
            created_at: r.created_at,
            updated_at: r.updated_at,
            revoked_at: r.revoked_at,
            revoked_by: r.revoked_by,
        })
    }
}

/// A relationship with the identity of the patient it matched (and, from the lookups that ask for
/// them, the names of the profiles assigned for it, space-separated: names have no spaces).
#[derive(sqlx::FromRow)]
struct MatchedRelationshipRow {
    m_ins_value: Option<String>,
    m_ins_oid: Option<String>,
    m_local_id: Option<String>,
    m_namespace: Option<String>,
    #[sqlx(default)]
    m_assigned_profiles: Option<String>,
    #[sqlx(flatten)]
    relationship: RelationshipRow,
}

impl MatchedRelationshipRow {
    fn split(self) -> StoreResult<RelationshipMatch> {
        let identity = match (self.m_ins_value, self.m_ins_oid, self.m_local_id, self.m_namespace) {
            (Some(value), Some(oid), _, _) => PatientIdentity::Ins { value, oid },
            (_, _, Some(local_id), Some(namespace)) => PatientIdentity::Local { local_id, namespace },
            _ => return Err(StoreError::Corrupt(format!("patient of relationship {}", self.relationship.id))),
        };
        let mut assigned_profiles: Vec<String> =
            self.m_assigned_profiles.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();
        assigned_profiles.sort();
        assigned_profiles.dedup();
        Ok(RelationshipMatch { identity, relationship: self.relationship.try_into()?, assigned_profiles })
    }
}

#[derive(sqlx::FromRow)]
struct AssignmentRow {
    account_id: String,
    profile_name: String,
    organisation_id: Option<String>,
    assigned_by: String,
    assigned_at: i64,
}

impl From<AssignmentRow> for ProfileAssignment {
    fn from(r: AssignmentRow) -> Self {
        ProfileAssignment {
            account_id: r.account_id,
            profile_name: r.profile_name,
            organisation_id: r.organisation_id,
            assigned_by: r.assigned_by,
            assigned_at: r.assigned_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    name: String,
    description: String,
    spec: String,
    max_duration: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct OrganisationRow {
    id: String,
    name: String,
    identifier_type: Option<String>,
    identifier: Option<String>,
    created_at: i64,
}

macro_rules! patient_columns {
    () => {
        "id, ins_value, ins_oid, local_id, namespace, account_id, created_at"
    };
}

macro_rules! relationship_columns {
    () => {
        "id, professional_id, patient_id, kind, organisation_id, valid_from, valid_until, status, source_client, \
         source_actor, evidence, created_at, updated_at, revoked_at, revoked_by"
    };
}

pub(super) fn relationships(rows: Vec<RelationshipRow>) -> StoreResult<Vec<Relationship>> {
    rows.into_iter().map(Relationship::try_from).collect()
}

macro_rules! assignment_columns {
    () => {
        "account_id, profile_name, organisation_id, assigned_by, assigned_at"
    };
}

macro_rules! sql_habilitation_store {
    ($store:ident, $lookups:expr, $assigned_lookups:expr) => {
        #[async_trait]
        impl HabilitationStore for $store {
            async fn upsert_practice(&self, account_id: &str, practice: &str, now: UnixTime) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO professionals (account_id, practice, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (account_id) DO UPDATE SET practice = excluded.practice, updated_at = excluded.updated_at",
                )
                .bind(account_id)
                .bind(practice)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(write_error("professional"))?;
                Ok(())
            }

            async fn practice_of(&self, account_id: &str) -> StoreResult<Option<String>> {
                sqlx::query_scalar("SELECT practice FROM professionals WHERE account_id = $1")
                    .bind(account_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)
            }

            async fn insert_organisation(&self, o: &Organisation) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO organisations (id, name, identifier_type, identifier, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&o.id)
                .bind(&o.name)
                .bind(&o.identifier_type)
                .bind(&o.identifier)
                .bind(o.created_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("organisation"))?;
                Ok(())
            }

            async fn organisation(&self, id: &str) -> StoreResult<Option<Organisation>> {
                let row = sqlx::query_as::<_, OrganisationRow>(
                    "SELECT id, name, identifier_type, identifier, created_at FROM organisations WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(row.map(|r| Organisation {
                    id: r.id,
                    name: r.name,
                    identifier_type: r.identifier_type,
                    identifier: r.identifier,
                    created_at: r.created_at,
                }))
            }

            async fn insert_patient(&self, p: &Patient) -> StoreResult<()> {
                let (ins_value, ins_oid, local_id, namespace) = match &p.identity {
                    PatientIdentity::Ins { value, oid } => (Some(value), Some(oid), None, None),
                    PatientIdentity::Local { local_id, namespace } => (None, None, Some(local_id), Some(namespace)),
                };
                let _writer = self.writer().await?;
                sqlx::query(concat!("INSERT INTO patients (", patient_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7)"))
                    .bind(&p.id)
                    .bind(ins_value)
                    .bind(ins_oid)
                    .bind(local_id)
                    .bind(namespace)
                    .bind(&p.account_id)
                    .bind(p.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(write_error("patient"))?;
                Ok(())
            }

            async fn patient_by_identity(&self, identity: &PatientIdentity) -> StoreResult<Option<Patient>> {
                let row = match identity {
                    PatientIdentity::Ins { value, oid } => {
                        sqlx::query_as::<_, PatientRow>(concat!(
                            "SELECT ",
                            patient_columns!(),
                            " FROM patients WHERE ins_value = $1 AND ins_oid = $2"
                        ))
                        .bind(value)
                        .bind(oid)
                        .fetch_optional(&self.pool)
                        .await
                    }
                    PatientIdentity::Local { local_id, namespace } => {
                        sqlx::query_as::<_, PatientRow>(concat!(
                            "SELECT ",
                            patient_columns!(),
                            " FROM patients WHERE namespace = $1 AND local_id = $2"
                        ))
                        .bind(namespace)
                        .bind(local_id)
                        .fetch_optional(&self.pool)
                        .await
                    }
                };
                row.map_err(unavailable)?.map(Patient::try_from).transpose()
            }

            async fn patient_by_id(&self, id: &str) -> StoreResult<Option<Patient>> {
                sqlx::query_as::<_, PatientRow>(concat!("SELECT ", patient_columns!(), " FROM patients WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?
                    .map(Patient::try_from)
                    .transpose()
            }

            async fn link_patient_account(&self, patient_id: &str, account_id: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("UPDATE patients SET account_id = $1 WHERE id = $2 AND account_id IS NULL")
                    .bind(account_id)
                    .bind(patient_id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn patients_of_account(&self, account_id: &str) -> StoreResult<Vec<Patient>> {
                sqlx::query_as::<_, PatientRow>(concat!(
                    "SELECT ",
                    patient_columns!(),
                    " FROM patients WHERE account_id = $1 ORDER BY created_at, id"
                ))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Patient::try_from)
                .collect()
            }

            async fn insert_relationship(&self, r: &Relationship) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(concat!(
                    "INSERT INTO relationships (",
                    relationship_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                ))
                .bind(&r.id)
                .bind(&r.professional_id)
                .bind(&r.patient_id)
                .bind(&r.kind)
                .bind(&r.organisation_id)
                .bind(r.valid_from)
                .bind(r.valid_until)
                .bind(r.status.as_str())
                .bind(&r.source_client)
                .bind(&r.source_actor)
                .bind(&r.evidence)
                .bind(r.created_at)
                .bind(r.updated_at)
                .bind(r.revoked_at)
                .bind(&r.revoked_by)
                .execute(&self.pool)
                .await
                .map_err(write_error("relationship"))?;
                Ok(())
            }

            async fn relationship(&self, id: &str) -> StoreResult<Option<Relationship>> {
                sqlx::query_as::<_, RelationshipRow>(concat!(
                    "SELECT ",
                    relationship_columns!(),
                    " FROM relationships WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(Relationship::try_from)
                .transpose()
            }

            async fn relationships_with_patients(
                &self,
                professional: ProfessionalKey<'_>,
                identities: &[PatientIdentity],
                with_assignments: bool,
            ) -> StoreResult<Vec<RelationshipMatch>> {
                if identities.is_empty() {
                    return Ok(Vec::new());
                }
                let (mut ins, mut local): (Vec<PatientIdentity>, Vec<PatientIdentity>) = (Vec::new(), Vec::new());
                for identity in identities {
                    let batch = if matches!(identity, PatientIdentity::Ins { .. }) { &mut ins } else { &mut local };
                    if !batch.contains(identity) {
                        batch.push(identity.clone());
                    }
                }
                let (by_login, key) = match professional {
                    ProfessionalKey::AccountId(k) => (false, k),
                    ProfessionalKey::Login(k) => (true, k),
                };
                let lookups = if with_assignments { &$assigned_lookups } else { &$lookups };
                let mut matched = Vec::new();
                for (batch, query) in [
                    (ins, if by_login { lookups.ins_by_login } else { lookups.ins_by_id }),
                    (local, if by_login { lookups.local_by_login } else { lookups.local_by_id }),
                ] {
                    if batch.is_empty() {
                        continue;
                    }
                    let rows = sqlx::query_as::<_, MatchedRelationshipRow>(query)
                        .bind(key)
                        .bind(identities_json(&batch))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    for row in rows {
                        matched.push(row.split()?);
                    }
                }
                Ok(matched)
            }

            async fn list_relationships(&self, f: &RelationshipFilter) -> StoreResult<Vec<Relationship>> {
                // A NULL filter matches everything; callers always set at least one.
                relationships(
                    sqlx::query_as::<_, RelationshipRow>(concat!(
                        "SELECT ",
                        relationship_columns!(),
                        " FROM relationships WHERE ($1 IS NULL OR professional_id = $1) \
                         AND ($2 IS NULL OR patient_id = $2) ORDER BY created_at, id LIMIT $3 OFFSET $4"
                    ))
                    .bind(&f.professional_id)
                    .bind(&f.patient_id)
                    .bind(f.limit)
                    .bind(f.offset)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?,
                )
            }

            async fn revoke_relationship(&self, id: &str, by: &str, at: UnixTime) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "UPDATE relationships SET status = 'revoked', revoked_at = $1, revoked_by = $2, updated_at = $1 \
                     WHERE id = $3 AND status = 'active'",
                )
                .bind(at)
                .bind(by)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn expire_relationship(&self, id: &str, until: UnixTime, at: UnixTime) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "UPDATE relationships SET valid_until = $1, updated_at = $2 \
                     WHERE id = $3 AND status = 'active' AND (valid_until IS NULL OR valid_until > $2)",
                )
                .bind(until)
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn upsert_profile(&self, p: &ProfileRecord) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO habilitation_profiles (name, description, spec, max_duration, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET \
                     description = excluded.description, spec = excluded.spec, max_duration = excluded.max_duration, \
                     updated_at = excluded.updated_at",
                )
                .bind(&p.name)
                .bind(&p.description)
                .bind(&p.spec)
                .bind(p.max_duration)
                .bind(p.created_at)
                .bind(p.updated_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("profile"))?;
                Ok(())
            }

            async fn profiles(&self) -> StoreResult<Vec<ProfileRecord>> {
                let rows = sqlx::query_as::<_, ProfileRow>(
                    "SELECT name, description, spec, max_duration, created_at, updated_at \
                     FROM habilitation_profiles ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows
                    .into_iter()
                    .map(|r| ProfileRecord {
                        name: r.name,
                        description: r.description,
                        spec: r.spec,
                        max_duration: r.max_duration,
                        created_at: r.created_at,
                        updated_at: r.updated_at,
                    })
                    .collect())
            }

            async fn delete_profile(&self, name: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM habilitation_profiles WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn profiles_version(&self) -> StoreResult<(i64, UnixTime)> {
                let (count, latest): (i64, Option<i64>) =
                    sqlx::query_as("SELECT COUNT(*), MAX(updated_at) FROM habilitation_profiles")
                        .fetch_one(&self.pool)
                        .await
                        .map_err(unavailable)?;
                Ok((count, latest.unwrap_or(0)))
            }

            async fn assign_profile(&self, a: &ProfileAssignment) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                // The unique index is on an expression (a NULL organisation is one value): no
                // conflict target, any conflict means "already held".
                let done = sqlx::query(concat!(
                    "INSERT INTO profile_assignments (",
                    assignment_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
                ))
                .bind(&a.account_id)
                .bind(&a.profile_name)
                .bind(&a.organisation_id)
                .bind(&a.assigned_by)
                .bind(a.assigned_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("profile assignment"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn unassign_profile(
                &self,
                account_id: &str,
                profile_name: &str,
                organisation_id: Option<&str>,
            ) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "DELETE FROM profile_assignments WHERE account_id = $1 AND profile_name = $2 \
                     AND COALESCE(organisation_id, '') = COALESCE($3, '')",
                )
                .bind(account_id)
                .bind(profile_name)
                .bind(organisation_id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(done.rows_affected() > 0)
            }

            async fn assignments_of_account(&self, account_id: &str) -> StoreResult<Vec<ProfileAssignment>> {
                let rows = sqlx::query_as::<_, AssignmentRow>(concat!(
                    "SELECT ",
                    assignment_columns!(),
                    " FROM profile_assignments WHERE account_id = $1 \
                     ORDER BY profile_name, COALESCE(organisation_id, '')"
                ))
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows.into_iter().map(ProfileAssignment::from).collect())
            }

            async fn assignments_of_profile(
                &self,
                profile_name: &str,
                limit: i64,
                offset: i64,
            ) -> StoreResult<Vec<ProfileAssignment>> {
                let rows = sqlx::query_as::<_, AssignmentRow>(concat!(
                    "SELECT ",
                    assignment_columns!(),
                    " FROM profile_assignments WHERE profile_name = $1 \
                     ORDER BY account_id, COALESCE(organisation_id, '') LIMIT $2 OFFSET $3"
                ))
                .bind(profile_name)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                Ok(rows.into_iter().map(ProfileAssignment::from).collect())
            }
        }
    };
}

/// The batch lookup of `relationships_with_patients`, one query per kind of identity (INS or
/// local id) so that each stays a plain three-way join whose generic plan PostgreSQL caches: the
/// identities' JSON (`$2`), the patients by identity, the relationships by (professional, patient).
/// `$1` names the professional. The backends differ only in how they read JSON.
macro_rules! matched_relationships {
    (ids: $ids:expr, identity: $identity:expr, professional: $professional:expr, assigned: $assigned:expr) => {
        concat!(
            "SELECT p.ins_value AS m_ins_value, p.ins_oid AS m_ins_oid, p.local_id AS m_local_id, \
             p.namespace AS m_namespace, ",
            $assigned,
            "r.id, r.professional_id, r.patient_id, r.kind, r.organisation_id, \
             r.valid_from, r.valid_until, r.status, r.source_client, r.source_actor, r.evidence, r.created_at, \
             r.updated_at, r.revoked_at, r.revoked_by FROM ",
            $ids,
            " JOIN patients p ON ",
            $identity,
            " JOIN relationships r ON r.patient_id = p.id AND r.professional_id = ",
            $professional,
            " ORDER BY r.created_at, r.id"
        )
    };
}

macro_rules! sqlite_ids {
    () => {
        "(SELECT json_extract(value, '$.v') AS v, json_extract(value, '$.o') AS o, json_extract(value, '$.l') AS l, \
         json_extract(value, '$.n') AS n FROM json_each($2)) AS ids"
    };
}

macro_rules! pg_ids {
    () => {
        "(SELECT x->>'v' AS v, x->>'o' AS o, x->>'l' AS l, x->>'n' AS n FROM json_array_elements($2::json) AS x) AS ids"
    };
}

macro_rules! by_ins {
    () => {
        "p.ins_value = ids.v AND p.ins_oid = ids.o"
    };
}

macro_rules! by_local {
    () => {
        "p.namespace = ids.n AND p.local_id = ids.l"
    };
}

/// An active professional account by login (the idNat).
macro_rules! professional_by_login {
    () => {
        "(SELECT id FROM accounts WHERE login = $1 AND kind = 'professional' AND status = 'active')"
    };
}

/// The profiles assigned to the relationship's professional that hold for it (platform-wide or in
/// its organisation), as one space-separated text: a correlated subquery on the assignments' index
/// (account first), so that the decision still costs one round trip. `$agg` is the backend's
/// string aggregate.
macro_rules! assigned_profiles {
    ($agg:expr) => {
        concat!(
            "(SELECT ",
            $agg,
            " FROM profile_assignments a WHERE a.account_id = r.professional_id \
             AND (a.organisation_id IS NULL OR a.organisation_id = r.organisation_id)) AS m_assigned_profiles, "
        )
    };
}

/// The four lookups of one backend: (INS | local id) × (professional by id | by login); `$assigned`
/// is the extra column of the lookups that also read assignments (empty for the others).
macro_rules! lookups {
    ($ids:ident, $assigned:expr) => {
        Lookups {
            ins_by_id: matched_relationships!(ids: $ids!(), identity: by_ins!(), professional: "$1", assigned: $assigned),
            ins_by_login: matched_relationships!(
                ids: $ids!(), identity: by_ins!(), professional: professional_by_login!(), assigned: $assigned
            ),
            local_by_id: matched_relationships!(ids: $ids!(), identity: by_local!(), professional: "$1", assigned: $assigned),
            local_by_login: matched_relationships!(
                ids: $ids!(), identity: by_local!(), professional: professional_by_login!(), assigned: $assigned
            ),
        }
    };
}

struct Lookups {
    ins_by_id: &'static str,
    ins_by_login: &'static str,
    local_by_id: &'static str,
    local_by_login: &'static str,
}

const SQLITE_LOOKUPS: Lookups = lookups!(sqlite_ids, "");
const PG_LOOKUPS: Lookups = lookups!(pg_ids, "");
const SQLITE_ASSIGNED_LOOKUPS: Lookups = lookups!(sqlite_ids, assigned_profiles!("group_concat(a.profile_name, ' ')"));
const PG_ASSIGNED_LOOKUPS: Lookups = lookups!(pg_ids, assigned_profiles!("string_agg(a.profile_name, ' ')"));

sql_habilitation_store!(SqliteStore, SQLITE_LOOKUPS, SQLITE_ASSIGNED_LOOKUPS);
sql_habilitation_store!(PgStore, PG_LOOKUPS, PG_ASSIGNED_LOOKUPS);
