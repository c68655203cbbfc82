//! [`AdminStore`] in SQL, for both backends (same macro pattern as the main store). Both backends
//! accept row-value comparisons (`(a, b) > ($1, $2)`) and `LIKE … ESCAPE`, so the keyset pages are
//! the same statement; patterns arrive lower-cased and compared with `LOWER(column)`, because
//! PostgreSQL's `LIKE` is case-sensitive and SQLite's is not.

use super::*;

#[derive(sqlx::FromRow)]
struct RoleRow {
    id: String,
    account_id: String,
    role: String,
    organisation_id: Option<String>,
    granted_by: String,
    created_at: i64,
}

impl TryFrom<RoleRow> for RoleGrant {
    type Error = StoreError;
    fn try_from(r: RoleRow) -> StoreResult<RoleGrant> {
        Ok(RoleGrant {
            role: AdminRole::parse(&r.role).ok_or_else(|| StoreError::Corrupt(format!("role {}: {}", r.id, r.role)))?,
            id: r.id,
            account_id: r.account_id,
            organisation_id: r.organisation_id,
            granted_by: r.granted_by,
            created_at: r.created_at,
        })
    }
}

fn roles(rows: Vec<RoleRow>) -> StoreResult<Vec<RoleGrant>> {
    rows.into_iter().map(RoleGrant::try_from).collect()
}

#[derive(sqlx::FromRow)]
struct OrganisationRecordRow {
    id: String,
    name: String,
    identifier_type: Option<String>,
    identifier: Option<String>,
    created_at: i64,
    updated_at: i64,
    disabled_at: Option<i64>,
}

impl From<OrganisationRecordRow> for OrganisationRecord {
    fn from(r: OrganisationRecordRow) -> Self {
        OrganisationRecord {
            id: r.id,
            name: r.name,
            identifier_type: r.identifier_type,
            identifier: r.identifier,
            created_at: r.created_at,
            // 0: never changed since creation (the column's default for older rows and inserts).
            updated_at: r.updated_at.max(r.created_at),
            disabled_at: r.disabled_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct DepartmentRow {
    id: String,
    organisation_id: String,
    name: String,
    created_at: i64,
}

impl From<DepartmentRow> for Department {
    fn from(r: DepartmentRow) -> Self {
        Department { id: r.id, organisation_id: r.organisation_id, name: r.name, created_at: r.created_at }
    }
}

#[derive(sqlx::FromRow)]
struct MembershipRow {
    account_id: String,
    organisation_id: String,
    department_id: Option<String>,
    created_at: i64,
}

impl From<MembershipRow> for Membership {
    fn from(r: MembershipRow) -> Self {
        Membership {
            account_id: r.account_id,
            organisation_id: r.organisation_id,
            department_id: r.department_id,
            created_at: r.created_at,
        }
    }
}

macro_rules! role_columns {
    () => {
        "id, account_id, role, organisation_id, granted_by, created_at"
    };
}

macro_rules! organisation_record_columns {
    () => {
        "id, name, identifier_type, identifier, created_at, updated_at, disabled_at"
    };
}

macro_rules! sql_admin_store {
    ($store:ident) => {
        #[async_trait]
        impl AdminStore for $store {
            async fn insert_role(&self, g: &RoleGrant) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(concat!("INSERT INTO admin_roles (", role_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6)"))
                    .bind(&g.id)
                    .bind(&g.account_id)
                    .bind(g.role.as_str())
                    .bind(&g.organisation_id)
                    .bind(&g.granted_by)
                    .bind(g.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(write_error("role"))?;
                Ok(())
            }

            async fn role(&self, id: &str) -> StoreResult<Option<RoleGrant>> {
                sqlx::query_as::<_, RoleRow>(concat!("SELECT ", role_columns!(), " FROM admin_roles WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?
                    .map(RoleGrant::try_from)
                    .transpose()
            }

            async fn delete_role(&self, id: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM admin_roles WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn roles_of(&self, account_id: &str) -> StoreResult<Vec<RoleGrant>> {
                roles(
                    sqlx::query_as::<_, RoleRow>(concat!(
                        "SELECT ",
                        role_columns!(),
                        " FROM admin_roles WHERE account_id = $1 ORDER BY created_at, id"
                    ))
                    .bind(account_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?,
                )
            }

            async fn list_roles(&self, organisation_id: Option<&str>) -> StoreResult<Vec<RoleGrant>> {
                roles(
                    sqlx::query_as::<_, RoleRow>(concat!(
                        "SELECT ",
                        role_columns!(),
                        " FROM admin_roles WHERE ($1 IS NULL OR organisation_id = $1) ORDER BY created_at, id"
                    ))
                    .bind(organisation_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?,
                )
            }

            async fn organisation_record(&self, id: &str) -> StoreResult<Option<OrganisationRecord>> {
                Ok(sqlx::query_as::<_, OrganisationRecordRow>(concat!(
                    "SELECT ",
                    organisation_record_columns!(),
                    " FROM organisations WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(OrganisationRecord::from))
            }

            async fn search_organisations(&self, f: &OrganisationFilter) -> StoreResult<Vec<OrganisationRecord>> {
                let (after_name, after_id) = match &f.after {
                    Some((name, id)) => (Some(name.as_str()), Some(id.as_str())),
                    None => (None, None),
                };
                Ok(sqlx::query_as::<_, OrganisationRecordRow>(concat!(
                    "SELECT ",
                    organisation_record_columns!(),
                    " FROM organisations WHERE ($1 IS NULL OR LOWER(name) LIKE $1 ESCAPE '\\') \
                     AND ($2 IS NULL OR (name, id) > ($2, $3)) ORDER BY name, id LIMIT $4"
                ))
                .bind(&f.pattern)
                .bind(after_name)
                .bind(after_id)
                .bind(f.limit)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(OrganisationRecord::from)
                .collect())
            }

            async fn update_organisation(&self, o: &OrganisationRecord) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "UPDATE organisations SET name = $1, identifier_type = $2, identifier = $3, updated_at = $4, \
                     disabled_at = $5 WHERE id = $6",
                )
                .bind(&o.name)
                .bind(&o.identifier_type)
                .bind(&o.identifier)
                .bind(o.updated_at)
                .bind(o.disabled_at)
                .bind(&o.id)
                .execute(&self.pool)
                .await
                .map_err(write_error("organisation"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_organisation(&self, id: &str) -> StoreResult<Option<bool>> {
                let _writer = self.writer().await?;
                let done = sqlx::query(
                    "DELETE FROM organisations WHERE id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM organisation_members WHERE organisation_id = $1)",
                )
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                if done.rows_affected() == 1 {
                    return Ok(Some(true));
                }
                // COUNT(*) is a 64-bit integer on both backends (a bare `1` is 32-bit on PostgreSQL).
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organisations WHERE id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok((count > 0).then_some(false))
            }

            async fn insert_department(&self, d: &Department) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query("INSERT INTO departments (id, organisation_id, name, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&d.id)
                    .bind(&d.organisation_id)
                    .bind(&d.name)
                    .bind(d.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(write_error("department"))?;
                Ok(())
            }

            async fn departments_of(&self, organisation_id: &str) -> StoreResult<Vec<Department>> {
                Ok(sqlx::query_as::<_, DepartmentRow>(
                    "SELECT id, organisation_id, name, created_at FROM departments WHERE organisation_id = $1 \
                     ORDER BY name, id",
                )
                .bind(organisation_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Department::from)
                .collect())
            }

            async fn delete_department(&self, organisation_id: &str, id: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM departments WHERE id = $1 AND organisation_id = $2")
                    .bind(id)
                    .bind(organisation_id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn upsert_membership(&self, m: &Membership) -> StoreResult<()> {
                let _writer = self.writer().await?;
                sqlx::query(
                    "INSERT INTO organisation_members (account_id, organisation_id, department_id, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, organisation_id) \
                     DO UPDATE SET department_id = excluded.department_id",
                )
                .bind(&m.account_id)
                .bind(&m.organisation_id)
                .bind(&m.department_id)
                .bind(m.created_at)
                .execute(&self.pool)
                .await
                .map_err(write_error("membership"))?;
                Ok(())
            }

            async fn delete_membership(&self, account_id: &str, organisation_id: &str) -> StoreResult<bool> {
                let _writer = self.writer().await?;
                let done =
                    sqlx::query("DELETE FROM organisation_members WHERE account_id = $1 AND organisation_id = $2")
                        .bind(account_id)
                        .bind(organisation_id)
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                Ok(done.rows_affected() == 1)
            }

            async fn memberships_of(&self, account_id: &str) -> StoreResult<Vec<Membership>> {
                Ok(sqlx::query_as::<_, MembershipRow>(
                    "SELECT account_id, organisation_id, department_id, created_at FROM organisation_members \
                     WHERE account_id = $1 ORDER BY organisation_id",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Membership::from)
                .collect())
            }

            async fn search_accounts(&self, f: &AccountFilter) -> StoreResult<Vec<Account>> {
                sqlx::query_as::<_, AccountRow>(concat!(
                    "SELECT ",
                    account_columns!(),
                    " FROM accounts WHERE ($1 IS NULL OR LOWER(login) LIKE $1 ESCAPE '\\' \
                     OR LOWER(COALESCE(email, '')) LIKE $1 ESCAPE '\\' \
                     OR LOWER(COALESCE(given_name, '') || ' ' || COALESCE(family_name, '')) LIKE $1 ESCAPE '\\') \
                     AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR status = $3) \
                     AND ($4 IS NULL OR id IN (SELECT account_id FROM organisation_members WHERE organisation_id = $4)) \
                     AND ($5 IS NULL OR login > $5) ORDER BY login LIMIT $6"
                ))
                .bind(&f.pattern)
                .bind(f.kind.map(AccountKind::as_str))
                .bind(f.status.map(AccountStatus::as_str))
                .bind(&f.organisation_id)
                .bind(&f.after_login)
                .bind(f.limit)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Account::try_from)
                .collect()
            }

            async fn active_grants_of(&self, account_id: &str, now: UnixTime) -> StoreResult<Vec<Grant>> {
                Ok(sqlx::query_as::<_, GrantRow>(concat!(
                    "SELECT ",
                    grant_columns!(),
                    " FROM grants WHERE account_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                     ORDER BY created_at DESC, id"
                ))
                .bind(account_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(Grant::from)
                .collect())
            }

            async fn delete_webauthn_credentials_of(&self, account_id: &str) -> StoreResult<u64> {
                let _writer = self.writer().await?;
                let done = sqlx::query("DELETE FROM webauthn_credentials WHERE account_id = $1")
                    .bind(account_id)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                Ok(done.rows_affected())
            }

            async fn search_relationships(&self, f: &RelationshipSearch) -> StoreResult<Vec<Relationship>> {
                let (before_at, before_id) = match &f.before {
                    Some((at, id)) => (Some(*at), Some(id.as_str())),
                    None => (None, None),
                };
                // `expired` is derived: stored active, past valid_until at $5.
                super::habilitation::relationships(
                    sqlx::query_as::<_, super::habilitation::RelationshipRow>(
                        "SELECT id, professional_id, patient_id, kind, organisation_id, valid_from, valid_until, \
                         status, source_client, source_actor, evidence, created_at, updated_at, revoked_at, revoked_by \
                         FROM relationships WHERE ($1 IS NULL OR professional_id = $1) \
                         AND ($2 IS NULL OR patient_id = $2) AND ($3 IS NULL OR organisation_id = $3) \
                         AND ($4 IS NULL OR ($4 = 'revoked' AND status = 'revoked') \
                              OR ($4 = 'active' AND status = 'active' AND (valid_until IS NULL OR valid_until > $5)) \
                              OR ($4 = 'expired' AND status = 'active' AND valid_until <= $5)) \
                         AND ($6 IS NULL OR (created_at, id) < ($6, $7)) \
                         ORDER BY created_at DESC, id DESC LIMIT $8",
                    )
                    .bind(&f.professional_id)
                    .bind(&f.patient_id)
                    .bind(&f.organisation_id)
                    .bind(f.status.map(RelationshipStatus::as_str))
                    .bind(f.now)
                    .bind(before_at)
                    .bind(before_id)
                    .bind(f.limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?,
                )
            }
        }
    };
}

sql_admin_store!(SqliteStore);
sql_admin_store!(PgStore);
