//! Habilitation profiles as Cedar policies.
//!
//! The question answered is "does profile P permit action A on relationship R in context C?".
//! [`PolicyEngine`] parses and validates the schema, the base `forbid` rules and the one profile
//! template once, at start. [`PolicyEngine::compile`] turns the administrators' [`ProfileSpec`]s
//! into [`CompiledProfiles`]: per profile, a `Habilis::Profile` entity and a policy set made of the
//! base rules, a link of the template (policy id `profile:<name>`) and, when the profile has one, its
//! `condition` compiled into `forbid … unless { <condition> }` (policy id `profile:<name>:condition`).
//! Everything is validated against the schema in strict mode before it is used; evaluation then only
//! builds the relationship entity and the context.
//!
//! Evaluation fails closed: an unknown profile or action is denied, and so is any request where a
//! policy errors while being evaluated (Cedar would otherwise skip an erroring `forbid`).
//!
//! Fast path: each profile's policy set is also folded into one expression, "the permit holds and
//! no forbid does" (`permit && !(forbid₁) && … && !(forbidₙ)`, each policy as its scope and
//! conditions), evaluated with Cedar's concrete evaluator. When it evaluates to `true`, every
//! policy was evaluated without error, the one permit holds and no forbid does: exactly the
//! authorizer's Allow, whose only reason is that permit. Any other outcome (false, an error) goes
//! through [`Authorizer::is_authorized`], which names the deciding policies or errors. The
//! authorizer re-derives and partially evaluates every policy's condition at each call; the one
//! pre-built expression costs about half of it (perf, in the server), and allowed decisions are the
//! common case (every token carrying a detail).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid, EvalResult,
    Expression, Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema, SlotId, Template,
    TemplatePrincipalConstraint, ValidationMode, ValidationResult, Validator, pst,
};

/// The actions a profile can permit: the ids of the `Habilis::Action` entities of the schema.
pub const ACTIONS: &[&str] = &["read", "write", "comment", "share", "message", "teleconsult"];

/// Id of the profile template (its `@id` annotation in `policies/profile.cedar`).
const TEMPLATE_ID: &str = "profile";
/// `valid_until` given to Cedar for an open-ended relationship (`i64::MAX`, as documented in the schema).
const OPEN_ENDED: i64 = i64::MAX;
const PROFILE_TYPE: &str = "Habilis::Profile";
const RELATIONSHIP_TYPE: &str = "Habilis::Relationship";
const ACTION_TYPE: &str = "Habilis::Action";

/// The Cedar sources, embedded at compile time from the repository's `policies/` folder.
#[derive(Clone, Debug)]
pub struct PolicySources {
    /// `schema.cedarschema`.
    pub schema: String,
    /// `profile.cedar`: the one profile template.
    pub template: String,
    /// `base.cedar`: the base `forbid` rules.
    pub base: String,
}

impl PolicySources {
    /// The sources shipped in the binary.
    pub fn embedded() -> PolicySources {
        PolicySources {
            schema: include_str!("../../../policies/schema.cedarschema").to_owned(),
            template: include_str!("../../../policies/profile.cedar").to_owned(),
            base: include_str!("../../../policies/base.cedar").to_owned(),
        }
    }

    /// Reads `schema.cedarschema`, `profile.cedar` and `base.cedar` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<PolicySources, PolicyError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| PolicyError::Io(format!("{}: {e}", path.display())))
        };
        Ok(PolicySources {
            schema: read("schema.cedarschema")?,
            template: read("profile.cedar")?,
            base: read("base.cedar")?,
        })
    }
}

/// A habilitation profile as administrators define it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ProfileSpec {
    /// Unique name, `^[a-z0-9][a-z0-9_.-]{0,63}$`.
    pub name: String,
    /// Relationship kinds covered.
    pub kinds: Vec<String>,
    /// Actions permitted (each one of [`ACTIONS`]).
    pub actions: Vec<String>,
    /// Data types that may be requested.
    pub datatypes: Vec<String>,
    /// client_ids the profile applies to.
    pub clients: Vec<String>,
    /// Minimum acr level: 0 none, 1 eidas1, 2 eidas2, 3 eidas3.
    pub min_acr_level: i64,
    /// Profession codes (e.g. "10"); empty = any profession.
    #[serde(default)]
    pub professions: Vec<String>,
    /// Optional Cedar boolean expression that must hold, on top of the template.
    #[serde(default)]
    pub condition: Option<String>,
    /// The profile permits only for professionals holding an assignment of it (platform-wide or in
    /// the relationship's organisation): base rule `profile_not_assigned`.
    #[serde(default)]
    pub requires_assignment: bool,
}

/// What evaluation needs to know about a relationship.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelationshipFacts {
    pub id: String,
    pub kind: String,
    /// "active" | "revoked" | "expired".
    pub status: String,
    /// Unix seconds.
    pub valid_from: i64,
    /// Unix seconds, exclusive; `None` = open-ended.
    pub valid_until: Option<i64>,
    pub professional_professions: Vec<String>,
    /// The patient's INS carries a test/demo OID.
    pub patient_test_identity: bool,
    pub organisation: Option<String>,
    /// Profiles assigned to the professional that hold for this relationship (platform-wide or in
    /// its organisation). Only read when some profile requires assignment; empty otherwise.
    pub professional_profiles: Vec<String>,
}

/// The request's circumstances.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DecisionContext {
    pub client: String,
    /// 0 none, 1 eidas1, 2 eidas2, 3 eidas3.
    pub acr_level: i64,
    /// Unix seconds.
    pub now: i64,
    /// Requested data types, already narrowed.
    pub datatypes: Vec<String>,
    pub production: bool,
}

/// The outcome of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDecision {
    pub allowed: bool,
    /// Ids of the policies that decided (e.g. "profile:expert", "relationship_not_active"), sorted.
    /// Empty for a default deny (no permit applied, unknown profile or action). A policy that failed to
    /// evaluate appears as "error:<policy id>" and denies.
    pub reasons: Vec<String>,
}

impl PolicyDecision {
    fn deny(reasons: Vec<String>) -> PolicyDecision {
        PolicyDecision { allowed: false, reasons }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid Cedar schema: {0}")]
    Schema(String),
    #[error("invalid Cedar policies: {0}")]
    Policy(String),
    #[error("invalid habilitation profile `{profile}`: {diagnostics}")]
    InvalidProfile { profile: String, diagnostics: String },
    #[error("cannot read policies: {0}")]
    Io(String),
}

/// Schema + base rules + template, parsed and validated once (at start).
pub struct PolicyEngine {
    validator: Validator,
    /// Base forbids + the template; every profile's policy set starts from a clone of it.
    base: PolicySet,
    profile_type: EntityTypeName,
}

impl PolicyEngine {
    /// Parses the sources and validates template and base rules against the schema (strict mode).
    pub fn new(sources: &PolicySources) -> Result<PolicyEngine, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(&sources.schema).map_err(|e| PolicyError::Schema(error_chain(&e)))?;
        let mut base = PolicySet::new();
        base.add_template(parse_template(&sources.template)?).map_err(|e| PolicyError::Policy(error_chain(&e)))?;
        for policy in parse_base(&sources.base)? {
            base.add(policy).map_err(|e| PolicyError::Policy(error_chain(&e)))?;
        }
        let validator = Validator::new(schema);
        let result = validator.validate(&base, ValidationMode::Strict);
        if !result.validation_passed() {
            return Err(PolicyError::Policy(validation_text(&result)));
        }
        Ok(PolicyEngine { validator, base, profile_type: type_name(PROFILE_TYPE)? })
    }

    /// Compiles profiles: per profile, the base forbids + a link of the template (policy id
    /// `profile:<name>`) + its condition policy, validated against the schema. Any invalid profile
    /// refuses the whole compilation with [`PolicyError::InvalidProfile`] naming it.
    pub fn compile(&self, profiles: &[ProfileSpec]) -> Result<CompiledProfiles, PolicyError> {
        let mut by_name = HashMap::with_capacity(profiles.len());
        let mut compiled = Vec::with_capacity(profiles.len());
        for (index, spec) in profiles.iter().enumerate() {
            if by_name.insert(spec.name.clone(), index).is_some() {
                return Err(invalid(&spec.name, "duplicate profile name".into()));
            }
            compiled.push(self.compile_one(spec)?);
        }
        let mut actions = Vec::with_capacity(ACTIONS.len());
        let action_type = type_name(ACTION_TYPE)?;
        for action in ACTIONS {
            actions.push(CompiledAction {
                name: action,
                uid: EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(action)),
                built_contexts: Memo::default(),
            });
        }
        Ok(CompiledProfiles {
            inner: Arc::new(Inner {
                specs: profiles.to_vec(),
                by_name,
                compiled,
                actions,
                relationship_type: type_name(RELATIONSHIP_TYPE)?,
                authorizer: Authorizer::new(),
            }),
        })
    }

    fn compile_one(&self, spec: &ProfileSpec) -> Result<CompiledProfile, PolicyError> {
        let name = spec.name.as_str();
        if !valid_profile_name(name) {
            return Err(invalid(name, "the name must match ^[a-z0-9][a-z0-9_.-]{0,63}$".into()));
        }
        if let Some(unknown) = spec.actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
            return Err(invalid(name, format!("unknown action `{unknown}` (known: {})", ACTIONS.join(", "))));
        }
        if !(0..=3).contains(&spec.min_acr_level) {
            return Err(invalid(name, format!("min_acr_level {} is outside 0..=3", spec.min_acr_level)));
        }

        let uid = EntityUid::from_type_name_and_id(self.profile_type.clone(), EntityId::new(name));
        let attrs = HashMap::from([
            ("name".to_owned(), RestrictedExpression::new_string(spec.name.clone())),
            ("requires_assignment".to_owned(), RestrictedExpression::new_bool(spec.requires_assignment)),
            ("kinds".to_owned(), string_set(&spec.kinds)),
            ("actions".to_owned(), string_set(&spec.actions)),
            ("datatypes".to_owned(), string_set(&spec.datatypes)),
            ("clients".to_owned(), string_set(&spec.clients)),
            ("min_acr_level".to_owned(), RestrictedExpression::new_long(spec.min_acr_level)),
            ("professions".to_owned(), string_set(&spec.professions)),
        ]);
        let entity = Entity::new(uid.clone(), attrs, HashSet::new()).map_err(|e| invalid(name, error_chain(&e)))?;
        // Checks the entity against the schema's `Profile` type.
        Entities::from_entities([entity.clone()], Some(self.validator.schema()))
            .map_err(|e| invalid(name, error_chain(&e)))?;

        let mut policies = self.base.clone();
        policies
            .link(
                PolicyId::new(TEMPLATE_ID),
                PolicyId::new(format!("profile:{name}")),
                HashMap::from([(SlotId::principal(), uid.clone())]),
            )
            .map_err(|e| invalid(name, error_chain(&e)))?;
        if let Some(condition) = &spec.condition {
            policies.add(condition_policy(name, condition)?).map_err(|e| invalid(name, error_chain(&e)))?;
        }
        let result = self.validator.validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            return Err(invalid(name, validation_text(&result)));
        }
        let allow = allow_expression(&policies);
        if allow.is_none() {
            tracing::debug!(profile = name, "no single-expression form for this profile: the authorizer decides alone");
        }
        Ok(CompiledProfile { uid, entity, policies, allow, built_entities: Memo::default() })
    }
}

/// Immutable, cheap to clone and share between threads; what requests evaluate against.
#[derive(Clone)]
pub struct CompiledProfiles {
    inner: Arc<Inner>,
}

struct Inner {
    specs: Vec<ProfileSpec>,
    by_name: HashMap<String, usize>,
    /// Same order as `specs`.
    compiled: Vec<CompiledProfile>,
    actions: Vec<CompiledAction>,
    relationship_type: EntityTypeName,
    authorizer: Authorizer,
}

/// The Cedar entities of one evaluation: the profile and the relationship (`resource`).
struct BuiltEntities {
    resource: EntityUid,
    entities: Entities,
}

/// Values built from exactly the inputs of their key, kept for reuse. Because the key is every
/// input, a kept value is always the one that would be built again: nothing can go stale. Bounded:
/// when full it starts again empty (the set of live keys refills it at once).
struct Memo<K, V> {
    values: std::sync::Mutex<HashMap<K, Arc<V>>>,
}

/// Bound on each memo's entries (an entities entry is about a kilobyte; one such memo per profile).
const MEMO_ENTRIES: usize = 4096;

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo { values: std::sync::Mutex::new(HashMap::new()) }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V> Memo<K, V> {
    /// The value kept for `key`, or built from it and kept; the key is copied only then.
    fn get_or_build<E>(&self, key: &K, build: impl FnOnce(&K) -> Result<V, E>) -> Result<Arc<V>, E> {
        if let Some(value) = self.lock().get(key) {
            return Ok(value.clone());
        }
        let value = Arc::new(build(key)?);
        let mut values = self.lock();
        if values.len() >= MEMO_ENTRIES {
            values.clear();
        }
        values.insert(key.clone(), value.clone());
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<V>>> {
        // A panic while holding the lock cannot leave a half-built value (values are inserted
        // whole), so a poisoned map is still sound.
        self.values.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct CompiledAction {
    name: &'static str,
    uid: EntityUid,
    /// Cedar contexts built for this action, by circumstances: shared by the decisions of one
    /// token (same client, login level, time) and by concurrent requests of the same second.
    built_contexts: Memo<DecisionContext, Context>,
}

struct CompiledProfile {
    uid: EntityUid,
    entity: Entity,
    /// Base forbids + template + this profile's link and condition.
    policies: PolicySet,
    /// `policies` as "the permit holds and no forbid does" (see the module's fast path); `None`
    /// when a policy has a form [`allow_expression`] does not translate.
    allow: Option<(Expression, String)>,
    /// Cedar entities built for this profile, by relationship facts: the same relationship is
    /// evaluated again at every refresh and exchange of the tokens that carry it.
    built_entities: Memo<RelationshipFacts, BuiltEntities>,
}

impl std::fmt::Debug for CompiledProfiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledProfiles").field("profiles", &self.inner.specs).finish()
    }
}

impl CompiledProfiles {
    pub fn profiles(&self) -> &[ProfileSpec] {
        &self.inner.specs
    }

    pub fn profile(&self, name: &str) -> Option<&ProfileSpec> {
        self.inner.by_name.get(name).map(|&i| &self.inner.specs[i])
    }

    /// Does `profile` permit `action` on `relationship` in `context`? Unknown profile or action → denied.
    pub fn evaluate(
        &self,
        profile: &str,
        action: &str,
        relationship: &RelationshipFacts,
        context: &DecisionContext,
    ) -> PolicyDecision {
        let (compiled, request, entities) = match self.prepare(profile, action, relationship, context) {
            Ok(prepared) => prepared,
            Err(denied) => return denied,
        };
        match fast_allow(compiled, &request, &entities.entities) {
            Some(allowed) => allowed,
            None => self.authorize(compiled, &request, &entities.entities, profile, action),
        }
    }

    /// The compiled profile, the Cedar request and its entities; or the denial when the profile or
    /// the action is unknown or the request cannot be built.
    fn prepare(
        &self,
        profile: &str,
        action: &str,
        relationship: &RelationshipFacts,
        context: &DecisionContext,
    ) -> Result<(&CompiledProfile, Request, Arc<BuiltEntities>), PolicyDecision> {
        let inner = &*self.inner;
        let Some(&index) = inner.by_name.get(profile) else {
            return Err(PolicyDecision::deny(Vec::new()));
        };
        let Some(compiled_action) = inner.actions.iter().find(|a| a.name == action) else {
            return Err(PolicyDecision::deny(Vec::new()));
        };
        let compiled = &inner.compiled[index];
        match build_request(inner, compiled, compiled_action, relationship, context) {
            Ok((request, entities)) => Ok((compiled, request, entities)),
            Err(error) => {
                tracing::warn!(profile, action, %error, "cannot build the Cedar request; denied");
                Err(PolicyDecision::deny(vec![format!("error:{error}")]))
            }
        }
    }

    /// The authorizer's decision, with the deciding policies (or the erroring ones) as reasons.
    fn authorize(
        &self,
        compiled: &CompiledProfile,
        request: &Request,
        entities: &Entities,
        profile: &str,
        action: &str,
    ) -> PolicyDecision {
        let response = self.inner.authorizer.is_authorized(request, &compiled.policies, entities);
        let diagnostics = response.diagnostics();
        let mut errors: Vec<String> = diagnostics
            .errors()
            .map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                tracing::warn!(profile, action, error = %e, "Cedar policy evaluation error; denied");
                format!("error:{}", e.policy_id())
            })
            .collect();
        if !errors.is_empty() {
            errors.sort();
            return PolicyDecision::deny(errors);
        }
        let mut reasons: Vec<String> = diagnostics.reason().map(|id| id.to_string()).collect();
        reasons.sort();
        PolicyDecision { allowed: response.decision() == Decision::Allow, reasons }
    }
}

/// The fast path's Allow (see the module documentation), or `None` when the authorizer must decide.
fn fast_allow(compiled: &CompiledProfile, request: &Request, entities: &Entities) -> Option<PolicyDecision> {
    let (allow, permit_id) = compiled.allow.as_ref()?;
    match cedar_policy::eval_expression(request, entities, allow) {
        Ok(EvalResult::Bool(true)) => Some(PolicyDecision { allowed: true, reasons: vec![permit_id.clone()] }),
        _ => None,
    }
}

/// Builds the request and the entities (the pre-built profile + the relationship) for one
/// evaluation; entities and context come from the memos when they were built before.
fn build_request(
    inner: &Inner,
    compiled: &CompiledProfile,
    action: &CompiledAction,
    relationship: &RelationshipFacts,
    context: &DecisionContext,
) -> Result<(Request, Arc<BuiltEntities>), String> {
    let entities =
        compiled.built_entities.get_or_build(relationship, |facts| build_entities(inner, compiled, facts))?;
    let context = action.built_contexts.get_or_build(context, |context| build_context(action.name, context))?;
    let request = Request::new(
        compiled.uid.clone(),
        action.uid.clone(),
        entities.resource.clone(),
        Context::clone(&context),
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok((request, entities))
}

/// The relationship's entity and its uid, with the profile's entity.
fn build_entities(
    inner: &Inner,
    compiled: &CompiledProfile,
    relationship: &RelationshipFacts,
) -> Result<BuiltEntities, String> {
    let resource = EntityUid::from_type_name_and_id(inner.relationship_type.clone(), EntityId::new(&relationship.id));
    let attrs = HashMap::from([
        ("kind".to_owned(), RestrictedExpression::new_string(relationship.kind.clone())),
        ("status".to_owned(), RestrictedExpression::new_string(relationship.status.clone())),
        ("valid_from".to_owned(), RestrictedExpression::new_long(relationship.valid_from)),
        ("valid_until".to_owned(), RestrictedExpression::new_long(relationship.valid_until.unwrap_or(OPEN_ENDED))),
        ("professional_professions".to_owned(), string_set(&relationship.professional_professions)),
        ("patient_test_identity".to_owned(), RestrictedExpression::new_bool(relationship.patient_test_identity)),
        (
            "organisation".to_owned(),
            RestrictedExpression::new_string(relationship.organisation.clone().unwrap_or_default()),
        ),
        ("professional_profiles".to_owned(), string_set(&relationship.professional_profiles)),
    ]);
    let resource_entity = Entity::new(resource.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?;
    // Entities and request are built from typed Rust values of the schema's shapes, so they are not
    // re-validated against the schema here (that costs more than the evaluation itself).
    let entities =
        Entities::from_entities([compiled.entity.clone(), resource_entity], None).map_err(|e| e.to_string())?;
    Ok(BuiltEntities { resource, entities })
}

fn build_context(action: &str, context: &DecisionContext) -> Result<Context, String> {
    Context::from_pairs([
        ("action".to_owned(), RestrictedExpression::new_string(action.to_owned())),
        ("client".to_owned(), RestrictedExpression::new_string(context.client.clone())),
        ("acr_level".to_owned(), RestrictedExpression::new_long(context.acr_level)),
        ("now".to_owned(), RestrictedExpression::new_long(context.now)),
        ("datatypes".to_owned(), string_set(&context.datatypes)),
        ("production".to_owned(), RestrictedExpression::new_bool(context.production)),
    ])
    .map_err(|e| e.to_string())
}

/// The policy set as one expression that is `true` exactly when its one permit holds and none of
/// its forbids does, with the permit's id (the reason of such an Allow). `None` when the set has
/// another number of permits or a policy scope other than "any" or `== entity`.
fn allow_expression(policies: &PolicySet) -> Option<(Expression, String)> {
    let mut permit: Option<(String, String)> = None;
    let mut forbids = Vec::new();
    for policy in policies.policies() {
        let condition = policy_condition(policy)?;
        match policy.effect() {
            Effect::Permit if permit.is_none() => permit = Some((policy.id().to_string(), condition)),
            Effect::Permit => return None,
            Effect::Forbid => forbids.push(condition),
        }
    }
    let (permit_id, permit) = permit?;
    let mut text = format!("({permit})");
    for forbid in forbids {
        text.push_str(&format!(" && !({forbid})"));
    }
    match Expression::from_str(&text) {
        Ok(expression) => Some((expression, permit_id)),
        Err(errors) => {
            tracing::warn!(errors = %parse_errors_text(&errors), "policy set not expressible as one expression");
            None
        }
    }
}

/// When one policy applies, as a Cedar expression: its scope, its `when` clauses and the negation
/// of its `unless` clauses, joined by `&&` (Cedar's own definition of a policy's condition).
fn policy_condition(policy: &Policy) -> Option<String> {
    let body = match policy.to_pst().ok()? {
        pst::Policy::Static(p) => p.body().clone(),
        pst::Policy::Linked(p) => p.into_static_policy().ok()?.body().clone(),
    };
    let mut parts = Vec::new();
    match &body.principal {
        pst::PrincipalConstraint::Any => {}
        pst::PrincipalConstraint::Eq(pst::EntityOrSlot::Entity(uid)) => parts.push(format!("principal == {uid}")),
        _ => return None,
    }
    match &body.action {
        pst::ActionConstraint::Any => {}
        pst::ActionConstraint::Eq(uid) => parts.push(format!("action == {uid}")),
        _ => return None,
    }
    match &body.resource {
        pst::ResourceConstraint::Any => {}
        pst::ResourceConstraint::Eq(pst::EntityOrSlot::Entity(uid)) => parts.push(format!("resource == {uid}")),
        _ => return None,
    }
    for clause in body.clauses() {
        match clause {
            pst::Clause::When(e) => parts.push(format!("({e})")),
            pst::Clause::Unless(e) => parts.push(format!("!({e})")),
        }
    }
    Some(if parts.is_empty() { "true".to_owned() } else { parts.join(" && ") })
}

/// Parses the template: exactly one, annotated `@id("profile")`, with a `principal == ?principal` slot.
fn parse_template(src: &str) -> Result<Template, PolicyError> {
    let template = Template::parse(Some(PolicyId::new(TEMPLATE_ID)), src)
        .map_err(|e| PolicyError::Policy(format!("profile template: {}", parse_errors_text(&e))))?;
    if template.annotation("id") != Some(TEMPLATE_ID) {
        return Err(PolicyError::Policy(format!("the profile template must be annotated @id(\"{TEMPLATE_ID}\")")));
    }
    if template.effect() != Effect::Permit
        || !matches!(template.principal_constraint(), TemplatePrincipalConstraint::Eq(None))
        || template.slots().count() != 1
    {
        return Err(PolicyError::Policy(
            "the profile template must be `permit (principal == ?principal, action, resource) when { … }`".into(),
        ));
    }
    Ok(template)
}

/// Parses the base rules: `forbid` policies only, each with a unique `@id` that cannot collide with
/// the ids given to profiles.
fn parse_base(src: &str) -> Result<Vec<Policy>, PolicyError> {
    let set = PolicySet::from_str(src).map_err(|e| PolicyError::Policy(format!("base rules: {}", error_chain(&e))))?;
    if set.templates().next().is_some() {
        return Err(PolicyError::Policy("base rules cannot contain templates".into()));
    }
    let mut seen = HashSet::new();
    let mut policies = Vec::new();
    for policy in set.policies() {
        let Some(id) = policy.annotation("id") else {
            return Err(PolicyError::Policy(format!("base rule without an @id annotation: {policy}")));
        };
        // `profile` and `profile:…` are the template's and the profiles' ids.
        let reserved = id == TEMPLATE_ID || id.starts_with(&format!("{TEMPLATE_ID}:"));
        if id.is_empty() || reserved || !seen.insert(id.to_owned()) {
            return Err(PolicyError::Policy(format!("base rule id `{id}` is empty, reserved or duplicated")));
        }
        if policy.effect() != Effect::Forbid {
            return Err(PolicyError::Policy(format!("base rule `{id}` must be a forbid")));
        }
        policies.push(policy.new_id(PolicyId::new(id)));
    }
    Ok(policies)
}

/// `forbid … unless { <condition> }` for one profile. The condition is first parsed on its own, as
/// one expression, so that its text cannot close the policy and smuggle in other clauses.
fn condition_policy(profile: &str, condition: &str) -> Result<Policy, PolicyError> {
    Expression::from_str(condition).map_err(|e| invalid(profile, format!("condition: {}", parse_errors_text(&e))))?;
    let id = format!("profile:{profile}:condition");
    let src = format!(
        "@id(\"{id}\")\nforbid (principal == {PROFILE_TYPE}::\"{profile}\", action, resource)\nunless {{\n{condition}\n}};"
    );
    Policy::parse(Some(PolicyId::new(id)), src)
        .map_err(|e| invalid(profile, format!("condition: {}", parse_errors_text(&e))))
}

/// `^[a-z0-9][a-z0-9_.-]{0,63}$`: safe inside a Cedar string literal and a policy id.
fn valid_profile_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

fn string_set(values: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(values.iter().map(|v| RestrictedExpression::new_string(v.clone())))
}

fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name).map_err(|e| PolicyError::Schema(format!("{name}: {}", parse_errors_text(&e))))
}

fn invalid(profile: &str, diagnostics: String) -> PolicyError {
    PolicyError::InvalidProfile { profile: profile.to_owned(), diagnostics }
}

/// Every parse error (Cedar's `Display` shows only the first).
fn parse_errors_text(errors: &cedar_policy::ParseErrors) -> String {
    errors.iter().map(|e| error_chain(e)).collect::<Vec<_>>().join("; ")
}

/// Every validation error, one per line, each naming its policy.
fn validation_text(result: &ValidationResult) -> String {
    let line = |e: &cedar_policy::ValidationError| {
        let id = e.policy_id();
        let text = error_chain(e);
        let text = text.strip_prefix(&format!("for policy `{id}`, ")).unwrap_or(&text).to_owned();
        format!("policy `{id}`: {text}")
    };
    result.validation_errors().map(line).collect::<Vec<_>>().join("\n")
}

/// An error and its sources, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn engine() -> PolicyEngine {
        PolicyEngine::new(&PolicySources::embedded()).expect("embedded policies validate")
    }

    fn expert() -> ProfileSpec {
        ProfileSpec {
            name: "expert".into(),
            kinds: vec!["care_team".into()],
            actions: vec!["read".into(), "comment".into()],
            datatypes: vec!["documents".into(), "prescriptions".into()],
            clients: vec!["dmp-viewer".into()],
            min_acr_level: 2,
            professions: vec!["10".into()],
            condition: None,
            requires_assignment: false,
        }
    }

    fn relationship() -> RelationshipFacts {
        RelationshipFacts {
            id: "rel-1".into(),
            kind: "care_team".into(),
            status: "active".into(),
            valid_from: NOW - 3600,
            valid_until: None,
            professional_professions: vec!["10".into(), "40".into()],
            patient_test_identity: false,
            organisation: None,
            professional_profiles: Vec::new(),
        }
    }

    fn context() -> DecisionContext {
        DecisionContext {
            client: "dmp-viewer".into(),
            acr_level: 2,
            now: NOW,
            datatypes: vec!["documents".into()],
            production: true,
        }
    }

    fn compiled(profiles: &[ProfileSpec]) -> CompiledProfiles {
        engine().compile(profiles).expect("profiles compile")
    }

    fn allowed() -> PolicyDecision {
        PolicyDecision { allowed: true, reasons: vec!["profile:expert".into()] }
    }

    fn denied_by(rule: &str) -> PolicyDecision {
        PolicyDecision { allowed: false, reasons: vec![rule.into()] }
    }

    fn default_deny() -> PolicyDecision {
        PolicyDecision { allowed: false, reasons: vec![] }
    }

    fn invalid_profile(spec: ProfileSpec) -> (String, String) {
        match engine().compile(&[spec]) {
            Err(PolicyError::InvalidProfile { profile, diagnostics }) => (profile, diagnostics),
            other => panic!("expected InvalidProfile, got {other:?}"),
        }
    }

    /// The authorizer alone (the reference) and the fast path's answer for the same request.
    fn both_paths(
        compiled: &CompiledProfiles,
        profile: &str,
        action: &str,
        relationship: &RelationshipFacts,
        context: &DecisionContext,
    ) -> (PolicyDecision, Option<PolicyDecision>) {
        let (profile_compiled, request, entities) =
            compiled.prepare(profile, action, relationship, context).expect("request builds");
        let reference = compiled.authorize(profile_compiled, &request, &entities.entities, profile, action);
        (reference, fast_allow(profile_compiled, &request, &entities.entities))
    }

    #[test]
    fn fast_path_allows_exactly_when_the_authorizer_does() {
        // Every profile shape (condition, assignment, professions) against every combination of
        // the facts each policy reads: the fast path must answer the authorizer's Allow (same
        // reason) and nothing else, and it must be taken whenever the authorizer allows.
        let mut conditional = expert();
        conditional.name = "conditional".into();
        conditional.condition = Some("context.now < 1750003600 && resource.organisation != \"org-b\"".into());
        let mut assigned = expert();
        assigned.name = "assigned".into();
        assigned.requires_assignment = true;
        assigned.professions = Vec::new();
        assigned.min_acr_level = 0;
        let profiles = [expert(), conditional, assigned];
        let compiled = compiled(&profiles);
        for spec in &profiles {
            assert!(compiled.inner.compiled[compiled.inner.by_name[&spec.name]].allow.is_some(), "{}", spec.name);
        }
        let (mut allowed_count, mut denied_count) = (0, 0);
        for profile in ["expert", "conditional", "assigned"] {
            for action in ["read", "comment", "share"] {
                for status in ["active", "revoked"] {
                    for (valid_from, valid_until) in [(NOW - 10, None), (NOW + 10, None), (NOW - 10, Some(NOW))] {
                        for kind in ["care_team", "treating"] {
                            for professions in [vec!["10".to_string()], vec!["40".to_string()]] {
                                for test_identity in [false, true] {
                                    for organisation in [None, Some("org-b".to_string())] {
                                        for assigned_profiles in [vec![], vec!["assigned".to_string()]] {
                                            let relationship = RelationshipFacts {
                                                status: status.into(),
                                                valid_from,
                                                valid_until,
                                                kind: kind.into(),
                                                professional_professions: professions.clone(),
                                                patient_test_identity: test_identity,
                                                organisation: organisation.clone(),
                                                professional_profiles: assigned_profiles,
                                                ..relationship()
                                            };
                                            for (client, acr_level, now, datatypes, production) in [
                                                ("dmp-viewer", 2, NOW, vec!["documents"], true),
                                                ("dmp-viewer", 1, NOW, vec!["documents"], true),
                                                ("other-app", 3, NOW, vec!["documents"], false),
                                                ("dmp-viewer", 3, NOW + 7200, vec![], false),
                                                ("dmp-viewer", 2, NOW, vec!["documents", "images"], true),
                                            ] {
                                                let context = DecisionContext {
                                                    client: client.into(),
                                                    acr_level,
                                                    now,
                                                    datatypes: datatypes.into_iter().map(String::from).collect(),
                                                    production,
                                                };
                                                let (reference, fast) =
                                                    both_paths(&compiled, profile, action, &relationship, &context);
                                                if reference.allowed {
                                                    allowed_count += 1;
                                                    assert_eq!(
                                                        fast.as_ref(),
                                                        Some(&reference),
                                                        "{relationship:?} {context:?}"
                                                    );
                                                } else {
                                                    denied_count += 1;
                                                    assert_eq!(
                                                        fast, None,
                                                        "{profile} {action} {relationship:?} {context:?}"
                                                    );
                                                }
                                                assert_eq!(
                                                    compiled.evaluate(profile, action, &relationship, &context),
                                                    reference
                                                );
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(allowed_count > 50 && denied_count > 1000, "{allowed_count} allowed, {denied_count} denied");
    }

    #[test]
    fn kept_entities_and_contexts_serve_only_identical_inputs() {
        let compiled = compiled(&[expert()]);
        assert_eq!(compiled.evaluate("expert", "read", &relationship(), &context()), allowed());
        // Each input the memos key on, changed alone after the allowed evaluation was kept.
        let revoked = RelationshipFacts { status: "revoked".into(), ..relationship() };
        assert_eq!(compiled.evaluate("expert", "read", &revoked, &context()), denied_by("relationship_not_active"));
        let ended = RelationshipFacts { valid_until: Some(NOW), ..relationship() };
        assert_eq!(compiled.evaluate("expert", "read", &ended, &context()), denied_by("relationship_outside_validity"));
        let weak = DecisionContext { acr_level: 1, ..context() };
        assert_eq!(compiled.evaluate("expert", "read", &relationship(), &weak), denied_by("acr_below_profile_minimum"));
        let later = DecisionContext { now: NOW - 7200, ..context() };
        assert_eq!(
            compiled.evaluate("expert", "read", &relationship(), &later),
            denied_by("relationship_outside_validity")
        );
        assert_eq!(compiled.evaluate("expert", "read", &relationship(), &context()), allowed());
    }

    #[test]
    fn a_full_memo_starts_again() {
        let memo: Memo<usize, usize> = Memo::default();
        for key in 0..MEMO_ENTRIES + 1 {
            assert_eq!(*memo.get_or_build(&key, |k| Ok::<_, ()>(k * 2)).unwrap(), key * 2);
        }
        assert_eq!(memo.lock().len(), 1);
        assert_eq!(*memo.get_or_build(&MEMO_ENTRIES, |_| Ok::<_, ()>(0)).unwrap(), MEMO_ENTRIES * 2, "kept");
        assert!(memo.get_or_build(&7, |_| Err("cannot build")).is_err());
        assert_eq!(memo.lock().len(), 1, "a failed build keeps nothing");
    }

    #[test]
    fn policy_conditions_include_scope_and_clauses() {
        let set = PolicySet::from_str(
            r#"@id("a") forbid (principal, action == Habilis::Action::"read", resource == Habilis::Relationship::"r")
               when { context.production } unless { resource.status == "active" };"#,
        )
        .unwrap();
        let policy = set.policies().next().unwrap();
        assert_eq!(
            policy_condition(policy).as_deref(),
            Some(
                r#"action == Habilis::Action::"read" && resource == Habilis::Relationship::"r" && (context.production) && !(resource.status == "active")"#
            )
        );
        // Scopes the translation does not cover leave the profile to the authorizer alone.
        let set =
            PolicySet::from_str(r#"@id("b") forbid (principal in Habilis::Profile::"p", action, resource);"#).unwrap();
        assert_eq!(policy_condition(set.policies().next().unwrap()), None);
    }

    #[test]
    fn embedded_sources_validate_and_files_match() {
        engine();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let from_dir = PolicySources::from_dir(&dir).unwrap();
        let embedded = PolicySources::embedded();
        assert_eq!(
            (from_dir.schema, from_dir.template, from_dir.base),
            (embedded.schema, embedded.template, embedded.base)
        );
        assert!(matches!(PolicySources::from_dir(&dir.join("missing")), Err(PolicyError::Io(_))));
    }

    #[test]
    fn compiled_profiles_are_shareable() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<CompiledProfiles>();
        let profiles = compiled(&[expert()]);
        assert_eq!(profiles.profiles(), &[expert()]);
        assert_eq!(profiles.profile("expert"), Some(&expert()));
        assert_eq!(profiles.profile("nobody"), None);
    }

    #[test]
    fn profile_permits_matching_action() {
        let profiles = compiled(&[expert()]);
        assert_eq!(profiles.evaluate("expert", "read", &relationship(), &context()), allowed());
        let mut ctx = context();
        ctx.datatypes = vec!["documents".into(), "prescriptions".into()];
        ctx.acr_level = 3;
        assert_eq!(profiles.evaluate("expert", "comment", &relationship(), &ctx), allowed());
        // No datatype requested is a subset of any profile's datatypes.
        ctx.datatypes.clear();
        assert_eq!(profiles.evaluate("expert", "read", &relationship(), &ctx), allowed());
    }

    #[test]
    fn template_conditions_deny() {
        let profiles = compiled(&[expert()]);
        let mut rel = relationship();
        rel.kind = "pharmacy".into();
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), default_deny(), "other kind");

        let mut ctx = context();
        ctx.client = "other-app".into();
        assert_eq!(profiles.evaluate("expert", "read", &relationship(), &ctx), default_deny(), "other client");

        assert_eq!(profiles.evaluate("expert", "write", &relationship(), &context()), default_deny(), "action");
        assert_eq!(profiles.evaluate("expert", "destroy", &relationship(), &context()), default_deny(), "unknown");

        let mut ctx = context();
        ctx.datatypes = vec!["documents".into(), "imaging".into()];
        assert_eq!(profiles.evaluate("expert", "read", &relationship(), &ctx), default_deny(), "datatype");

        let mut rel = relationship();
        rel.professional_professions = vec!["21".into()];
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), default_deny(), "profession");
    }

    #[test]
    fn empty_professions_means_any_profession() {
        let mut spec = expert();
        spec.professions.clear();
        let profiles = compiled(&[spec]);
        let mut rel = relationship();
        rel.professional_professions = vec!["21".into()];
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), allowed());
    }

    #[test]
    fn relationship_status_and_validity_deny_with_base_rule_ids() {
        let profiles = compiled(&[expert()]);
        for status in ["revoked", "expired"] {
            let mut rel = relationship();
            rel.status = status.into();
            assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), denied_by("relationship_not_active"));
        }

        let mut rel = relationship();
        rel.valid_from = NOW + 1;
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), denied_by("relationship_outside_validity"));

        let mut rel = relationship();
        rel.valid_from = NOW;
        rel.valid_until = Some(NOW + 1);
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), allowed(), "window is [from, until)");
        rel.valid_until = Some(NOW);
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), denied_by("relationship_outside_validity"));
    }

    #[test]
    fn acr_below_profile_minimum_denies() {
        let profiles = compiled(&[expert()]);
        let mut ctx = context();
        ctx.acr_level = 1;
        assert_eq!(profiles.evaluate("expert", "read", &relationship(), &ctx), denied_by("acr_below_profile_minimum"));
    }

    #[test]
    fn test_identity_denied_in_production_only() {
        let profiles = compiled(&[expert()]);
        let mut rel = relationship();
        rel.patient_test_identity = true;
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), denied_by("test_identity_in_production"));
        let mut ctx = context();
        ctx.production = false;
        assert_eq!(profiles.evaluate("expert", "read", &rel, &ctx), allowed());
    }

    #[test]
    fn several_base_rules_are_all_reported() {
        let profiles = compiled(&[expert()]);
        let mut rel = relationship();
        rel.status = "revoked".into();
        rel.patient_test_identity = true;
        let decision = profiles.evaluate("expert", "read", &rel, &context());
        assert!(!decision.allowed);
        assert_eq!(decision.reasons, vec!["relationship_not_active", "test_identity_in_production"]);
    }

    #[test]
    fn a_profile_requiring_assignment_permits_only_its_holders() {
        let mut spec = expert();
        spec.requires_assignment = true;
        let mut other = expert();
        other.name = "other".into();
        let profiles = compiled(&[spec, other]);
        let mut rel = relationship();
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), denied_by("profile_not_assigned"));
        rel.professional_profiles = vec!["other".into()];
        assert_eq!(
            profiles.evaluate("expert", "read", &rel, &context()),
            denied_by("profile_not_assigned"),
            "another profile's assignment"
        );
        assert_eq!(
            profiles.evaluate("other", "read", &relationship(), &context()),
            PolicyDecision { allowed: true, reasons: vec!["profile:other".into()] },
            "profiles without the requirement ignore assignments"
        );
        rel.professional_profiles.push("expert".into());
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), allowed());
        // The other base rules still apply to holders.
        rel.status = "revoked".into();
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), denied_by("relationship_not_active"));
    }

    #[test]
    fn conditions_can_read_the_profile_name_and_assignments() {
        let mut spec = expert();
        spec.condition = Some(r#"resource.professional_profiles.contains(principal.name)"#.into());
        let profiles = compiled(&[spec]);
        let mut rel = relationship();
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), denied_by("profile:expert:condition"));
        rel.professional_profiles = vec!["expert".into()];
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), allowed());
    }

    #[test]
    fn unknown_profile_is_denied() {
        let profiles = compiled(&[expert()]);
        assert_eq!(profiles.evaluate("nobody", "read", &relationship(), &context()), default_deny());
        assert_eq!(compiled(&[]).evaluate("expert", "read", &relationship(), &context()), default_deny());
    }

    #[test]
    fn profiles_do_not_leak_into_each_other() {
        let mut writer = expert();
        writer.name = "writer".into();
        writer.actions = vec!["write".into()];
        writer.min_acr_level = 0;
        let profiles = compiled(&[expert(), writer]);
        assert_eq!(profiles.evaluate("expert", "write", &relationship(), &context()), default_deny());
        assert_eq!(
            profiles.evaluate("writer", "write", &relationship(), &context()),
            PolicyDecision { allowed: true, reasons: vec!["profile:writer".into()] }
        );
    }

    #[test]
    fn condition_restricts_the_profile() {
        let mut spec = expert();
        spec.condition = Some(r#"resource.organisation == "org-1" && context.now >= 0"#.into());
        let profiles = compiled(&[spec]);
        let mut rel = relationship();
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), denied_by("profile:expert:condition"));
        rel.organisation = Some("org-1".into());
        assert_eq!(profiles.evaluate("expert", "read", &rel, &context()), allowed());
    }

    #[test]
    fn invalid_condition_text_is_refused_with_diagnostics() {
        let mut spec = expert();
        spec.condition = Some("resource.kind == ".into());
        let (profile, diagnostics) = invalid_profile(spec);
        assert_eq!(profile, "expert");
        assert!(diagnostics.starts_with("condition: "), "{diagnostics}");
        assert!(diagnostics.contains("unexpected end of input"), "{diagnostics}");

        // Text that would close the policy and add clauses or policies is not one expression.
        for smuggled in ["true } when { false", "true }; permit (principal, action, resource) when { true"] {
            let mut spec = expert();
            spec.condition = Some(smuggled.into());
            let (_, diagnostics) = invalid_profile(spec);
            assert!(diagnostics.starts_with("condition: "), "{diagnostics}");
        }
    }

    #[test]
    fn condition_failing_schema_validation_is_refused() {
        let mut spec = expert();
        spec.condition = Some("resource.ward == \"A\"".into());
        let (profile, diagnostics) = invalid_profile(spec);
        assert_eq!(profile, "expert");
        assert!(diagnostics.contains("ward"), "{diagnostics}");
        assert!(diagnostics.contains("profile:expert:condition"), "{diagnostics}");

        let mut spec = expert();
        spec.condition = Some("context.acr_level".into());
        let (_, diagnostics) = invalid_profile(spec);
        assert!(diagnostics.to_lowercase().contains("bool"), "not a boolean: {diagnostics}");
    }

    #[test]
    fn bad_name_action_or_acr_is_refused() {
        for name in ["", "Expert", "_x", "a b", "a\"b", &"a".repeat(65)] {
            let mut spec = expert();
            spec.name = name.into();
            let (profile, diagnostics) = invalid_profile(spec);
            assert_eq!(profile, name);
            assert!(diagnostics.contains("name"), "{diagnostics}");
        }
        let mut spec = expert();
        spec.name = format!("9{}", "a._-".repeat(15));
        engine().compile(&[spec]).expect("a 61-character name with every allowed character");

        let mut spec = expert();
        spec.actions.push("delete".into());
        let (_, diagnostics) = invalid_profile(spec);
        assert!(diagnostics.contains("unknown action `delete`"), "{diagnostics}");

        for level in [-1, 4] {
            let mut spec = expert();
            spec.min_acr_level = level;
            let (_, diagnostics) = invalid_profile(spec);
            assert!(diagnostics.contains("min_acr_level"), "{diagnostics}");
        }

        let (profile, diagnostics) = match engine().compile(&[expert(), expert()]) {
            Err(PolicyError::InvalidProfile { profile, diagnostics }) => (profile, diagnostics),
            other => panic!("expected InvalidProfile, got {other:?}"),
        };
        assert_eq!((profile.as_str(), diagnostics.as_str()), ("expert", "duplicate profile name"));
    }

    #[test]
    fn invalid_sources_are_refused() {
        let mut sources = PolicySources::embedded();
        sources.base.push_str("\n@id(\"oops\") permit (principal, action, resource);");
        assert!(matches!(PolicyEngine::new(&sources), Err(PolicyError::Policy(m)) if m.contains("forbid")));

        let mut sources = PolicySources::embedded();
        sources.base.push_str("\n@id(\"bad\") forbid (principal, action, resource) when { resource.nope };");
        assert!(matches!(PolicyEngine::new(&sources), Err(PolicyError::Policy(m)) if m.contains("nope")));

        for reserved in ["profile", "profile:x"] {
            let mut sources = PolicySources::embedded();
            sources.base.push_str(&format!("\n@id(\"{reserved}\") forbid (principal, action, resource);"));
            assert!(matches!(PolicyEngine::new(&sources), Err(PolicyError::Policy(m)) if m.contains("reserved")));
        }

        let mut sources = PolicySources::embedded();
        sources.schema.push_str("\nentity Broken {");
        assert!(matches!(PolicyEngine::new(&sources), Err(PolicyError::Schema(_))));
    }
}
