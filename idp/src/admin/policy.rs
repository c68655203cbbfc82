//! Administration rules as Cedar policies (`policies/admin.cedarschema`, `policies/admin.cedar`),
//! evaluated by the same engine as habilitations: principal = the administrator (with what its
//! roles give it), action = `read` | `write` | `administer`, resource = the target (with its
//! organisations). Parsed and validated against the schema (strict mode) once, at start.
//!
//! Fails closed: a request that cannot be built, or any policy that errors, is a deny.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

const SCHEMA: &str = include_str!("../../../policies/admin.cedarschema");
const POLICIES: &str = include_str!("../../../policies/admin.cedar");

/// What an operation does, as the policies name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Read,
    /// A change inside an organisation (accounts, departments, memberships, the organisation itself).
    Write,
    /// Platform-wide structure: organisations created or deleted, roles granted or revoked.
    Administer,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Administer => "administer",
        }
    }
}

/// The principal's attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminFacts {
    pub platform: bool,
    pub auditor: bool,
    pub organisations: Vec<String>,
}

/// The resource's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetFacts {
    /// `organisation`, `department`, `account`, `role` or `platform`.
    pub kind: &'static str,
    /// Organisations it belongs to; empty for a platform-wide target.
    pub organisations: Vec<String>,
    /// An account holding an administration role.
    pub privileged: bool,
}

impl TargetFacts {
    /// Something of one organisation (or of none: platform-wide).
    pub fn of(kind: &'static str, organisation: Option<&str>) -> TargetFacts {
        TargetFacts { kind, organisations: organisation.map(str::to_owned).into_iter().collect(), privileged: false }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("administration policies: {0}")]
pub struct AdminPolicyError(String);

/// The outcome of one evaluation: allowed or not, and the ids of the deciding policies (empty for
/// a default deny; `error:<id>` for a policy that failed to evaluate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminDecision {
    pub allowed: bool,
    pub reasons: Vec<String>,
}

pub struct AdminPolicy {
    policies: PolicySet,
    authorizer: Authorizer,
    admin_type: EntityTypeName,
    target_type: EntityTypeName,
    action_type: EntityTypeName,
}

impl AdminPolicy {
    /// The policies shipped in the binary.
    pub fn embedded() -> Result<AdminPolicy, AdminPolicyError> {
        Self::new(SCHEMA, POLICIES)
    }

    pub fn new(schema: &str, policies: &str) -> Result<AdminPolicy, AdminPolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(schema).map_err(|e| AdminPolicyError(format!("schema: {e}")))?;
        let policies = PolicySet::from_str(policies).map_err(|e| AdminPolicyError(format!("policies: {e}")))?;
        let result = Validator::new(schema).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(AdminPolicyError(errors.join("; ")));
        }
        let type_name =
            |name: &str| EntityTypeName::from_str(name).map_err(|e| AdminPolicyError(format!("{name}: {e}")));
        Ok(AdminPolicy {
            policies,
            authorizer: Authorizer::new(),
            admin_type: type_name("HabilisAdmin::Admin")?,
            target_type: type_name("HabilisAdmin::Target")?,
            action_type: type_name("HabilisAdmin::Action")?,
        })
    }

    /// May `admin` perform `operation` on `target`?
    pub fn evaluate(&self, admin: &AdminFacts, operation: Operation, target: &TargetFacts) -> AdminDecision {
        let request = match self.request(admin, operation, target) {
            Ok(built) => built,
            Err(error) => {
                tracing::warn!(%error, "cannot build the administration request; denied");
                return AdminDecision { allowed: false, reasons: vec![format!("error:{error}")] };
            }
        };
        let (request, entities) = request;
        let response = self.authorizer.is_authorized(&request, &self.policies, &entities);
        let diagnostics = response.diagnostics();
        let mut errors: Vec<String> = diagnostics
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                tracing::warn!(error = %e, "administration policy evaluation error; denied");
                format!("error:{}", e.policy_id())
            })
            .collect();
        if !errors.is_empty() {
            errors.sort();
            return AdminDecision { allowed: false, reasons: errors };
        }
        let mut reasons: Vec<String> = diagnostics.reason().map(|id| self.policy_name(id)).collect();
        reasons.sort();
        AdminDecision { allowed: response.decision() == Decision::Allow, reasons }
    }

    /// The `@id` annotation of a policy (what the files name it), else Cedar's id.
    fn policy_name(&self, id: &cedar_policy::PolicyId) -> String {
        self.policies.policy(id).and_then(|p| p.annotation("id")).map(str::to_owned).unwrap_or_else(|| id.to_string())
    }

    fn request(
        &self,
        admin: &AdminFacts,
        operation: Operation,
        target: &TargetFacts,
    ) -> Result<(cedar_policy::Request, Entities), String> {
        let strings = |values: &[String]| {
            RestrictedExpression::new_set(values.iter().map(|v| RestrictedExpression::new_string(v.clone())))
        };
        let principal = EntityUid::from_type_name_and_id(self.admin_type.clone(), EntityId::new("caller"));
        let resource = EntityUid::from_type_name_and_id(self.target_type.clone(), EntityId::new("target"));
        let action = EntityUid::from_type_name_and_id(self.action_type.clone(), EntityId::new(operation.as_str()));
        let principal_entity = Entity::new(
            principal.clone(),
            HashMap::from([
                ("platform".to_owned(), RestrictedExpression::new_bool(admin.platform)),
                ("auditor".to_owned(), RestrictedExpression::new_bool(admin.auditor)),
                ("organisations".to_owned(), strings(&admin.organisations)),
            ]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        let resource_entity = Entity::new(
            resource.clone(),
            HashMap::from([
                ("kind".to_owned(), RestrictedExpression::new_string(target.kind.to_owned())),
                ("organisations".to_owned(), strings(&target.organisations)),
                ("privileged".to_owned(), RestrictedExpression::new_bool(target.privileged)),
            ]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities([principal_entity, resource_entity], None).map_err(|e| e.to_string())?;
        let request = cedar_policy::Request::new(principal, action, resource, Context::empty(), None)
            .map_err(|e| e.to_string())?;
        Ok((request, entities))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AdminPolicy {
        AdminPolicy::embedded().expect("the embedded administration policies validate")
    }

    fn org_admin(orgs: &[&str]) -> AdminFacts {
        AdminFacts { organisations: orgs.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn account(org: &str, privileged: bool) -> TargetFacts {
        TargetFacts { kind: "account", organisations: vec![org.into()], privileged }
    }

    #[test]
    fn platform_admin_may_do_everything() {
        let platform = AdminFacts { platform: true, ..Default::default() };
        for op in [Operation::Read, Operation::Write, Operation::Administer] {
            let d = policy().evaluate(&platform, op, &TargetFacts::of("platform", None));
            assert!(d.allowed, "{op:?}: {d:?}");
            assert!(policy().evaluate(&platform, op, &account("o1", true)).allowed);
        }
    }

    #[test]
    fn auditor_reads_only() {
        let auditor = AdminFacts { auditor: true, ..Default::default() };
        let d = policy().evaluate(&auditor, Operation::Read, &account("o1", true));
        assert_eq!(d, AdminDecision { allowed: true, reasons: vec!["auditor_reads".into()] });
        assert!(!policy().evaluate(&auditor, Operation::Write, &account("o1", false)).allowed);
        assert!(!policy().evaluate(&auditor, Operation::Administer, &TargetFacts::of("role", None)).allowed);
    }

    #[test]
    fn org_admin_is_limited_to_its_organisations() {
        let admin = org_admin(&["o1", "o2"]);
        for op in [Operation::Read, Operation::Write] {
            assert!(policy().evaluate(&admin, op, &account("o2", false)).allowed, "{op:?}");
            let d = policy().evaluate(&admin, op, &account("o3", false));
            assert_eq!(d, AdminDecision { allowed: false, reasons: vec![] }, "{op:?}: default deny");
        }
        // Platform-wide targets and structural operations are never an organisation's.
        assert!(!policy().evaluate(&admin, Operation::Read, &TargetFacts::of("organisation", None)).allowed);
        assert!(!policy().evaluate(&admin, Operation::Administer, &TargetFacts::of("role", Some("o1"))).allowed);
    }

    #[test]
    fn org_admin_cannot_change_another_administrator() {
        let admin = org_admin(&["o1"]);
        assert!(policy().evaluate(&admin, Operation::Read, &account("o1", true)).allowed);
        let d = policy().evaluate(&admin, Operation::Write, &account("o1", true));
        assert!(!d.allowed);
        assert_eq!(d.reasons, vec!["privileged_accounts_need_platform"]);
    }

    #[test]
    fn nobody_gets_nothing() {
        let d = policy().evaluate(&AdminFacts::default(), Operation::Read, &account("o1", false));
        assert!(!d.allowed);
    }

    #[test]
    fn invalid_policies_are_refused() {
        let bad = format!("{POLICIES}\n@id(\"typo\") permit (principal, action, resource) when {{ principal.nope }};");
        assert!(AdminPolicy::new(SCHEMA, &bad).is_err());
        assert!(AdminPolicy::new("namespace Broken {", POLICIES).is_err());
    }
}
