//! The audit event vocabulary: one enum, so adding an event is a compile-checked change
//! (STYLE.md §10). Field names are stable: they are what auditors search for.

use serde::Serialize;

/// What happened. Field names are stable: they are what auditors search for.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// A card login succeeded (`acr=eidas3`).
    CardLoginSucceeded { account_id: String, id_nat: String, fingerprint: String, step_up: bool },
    /// A card was presented and refused; `reason` is a stable code (`revoked`, `expired`, …).
    CardLoginRefused { reason: String, id_nat: Option<String>, fingerprint: Option<String>, subject: Option<String> },
    /// A card was accepted although its revocation status is unknown (`card.revocation = fail-open`).
    CardRevocationFailOpen { id_nat: String, fingerprint: String, reason: String },
    /// The certificate on record for an account changed (card renewal, or another card).
    CardCertificateChanged { account_id: String, previous: Option<String>, current: String },
    /// An account was created from a card (`card.unknown_id_nat`), active or pending approval.
    CardAccountCreated { account_id: String, id_nat: String, pending_approval: bool },
    /// A client-certificate header arrived from an address that is not a trusted proxy.
    ForgedProxyHeader { header: String },
    /// A certificate-bound access token was presented without its certificate.
    CertificateBindingMismatch { client_id: String },
    /// A CRL could not be refreshed.
    RevocationListRefreshFailed { source: String, error: String },
    /// A security key or passkey was registered.
    WebauthnRegistered { account_id: String, credential_id: String },
    /// A security key or passkey was revoked by its owner or an administrator.
    WebauthnRevoked { account_id: String, credential_id: String, by: String },
    /// A login step with a security key or passkey succeeded.
    WebauthnLoginSucceeded { account_id: String, credential_id: String },
    /// A registration or assertion was refused (replay, wrong origin, unknown or revoked key,
    /// counter regression…); `reason` says which.
    WebauthnRefused { account_id: Option<String>, reason: String },
    /// A `patient_access` request was evaluated (token issuance, token exchange or the decision
    /// API). `patient` is minimised (kind and last characters); `reason` says why it was denied.
    HabilitationDecision {
        account_id: String,
        patient: String,
        actions: Vec<String>,
        granted: bool,
        relationship_id: Option<String>,
        profile: Option<String>,
        reason: Option<String>,
        via: String,
    },
    /// A professional–patient relationship was created.
    RelationshipCreated {
        relationship_id: String,
        professional_id: String,
        patient_id: String,
        kind: String,
        actor: String,
        evidence: String,
    },
    /// An application linked a patient record to the patient's own account.
    PatientLinked { patient_id: String, account_id: String, client_id: String },
    /// A relationship was revoked or ended.
    RelationshipEnded { relationship_id: String, actor: String, status: String },
    /// A habilitation profile was created, changed or removed.
    ProfileChanged { name: String, actor: String, before: Option<String>, after: Option<String> },
    /// A professional's practice data (professions, sites) was changed by an administrator.
    PracticeChanged { account_id: String, actor: String, before: Option<String>, after: String },
    /// A token was exchanged (RFC 8693) for a narrower one.
    TokenExchanged { subject_client: String, actor_client: String, account_id: Option<String>, audience: Vec<String> },
    /// A client registered itself (RFC 7591). `actor` names the initial access token
    /// (`initial_access_token:<id>`); `metadata` is the stored document (never a secret).
    ClientRegistered { client_id: String, actor: String, metadata: String },
    /// A self-registered client replaced its metadata (RFC 7592); `actor` is
    /// `registration_access_token:<client_id>`.
    ClientUpdated { client_id: String, actor: String, before: String, after: String },
    /// A self-registered client deleted itself (RFC 7592), with its grants and consents.
    ClientDeleted { client_id: String, actor: String, before: String },
    /// An administrator issued an initial access token (`actor`: `cli` or an admin identity).
    RegistrationTokenIssued {
        token_id: String,
        actor: String,
        description: Option<String>,
        expires_at: i64,
        max_uses: i64,
    },
    /// An administrator revoked an initial access token.
    RegistrationTokenRevoked { token_id: String, actor: String },
    /// The admin API refused an operation (e.g. an organisation administrator reaching into another
    /// organisation). `reasons` are the ids of the deciding Cedar policies (empty: no rule allows it).
    AdminAccessDenied {
        actor: String,
        operation: String,
        target: String,
        organisations: Vec<String>,
        reasons: Vec<String>,
    },
    /// An administration role was granted (`after`) or revoked (`before`), as JSON.
    AdminRoleChanged { account_id: String, actor: String, before: Option<String>, after: Option<String> },
    /// An organisation was created, changed, disabled or deleted.
    OrganisationChanged { organisation_id: String, actor: String, before: Option<String>, after: Option<String> },
    /// A department of an organisation was created or deleted.
    DepartmentChanged {
        department_id: String,
        organisation_id: String,
        actor: String,
        before: Option<String>,
        after: Option<String>,
    },
    /// An administrator changed an account; `change` says what (`invited`, `disabled`, `enabled`,
    /// `membership_added`, `membership_removed`, `factors_reset`, `sessions_killed`).
    AccountChanged { account_id: String, actor: String, change: String, before: Option<String>, after: Option<String> },
    /// An administrator changed a client through the admin API; `change` says what (`registered`,
    /// `updated`, `secret_rotated`, `deleted`). `before`/`after` are the stored metadata documents
    /// (never a secret nor its hash).
    ClientChanged { client_id: String, actor: String, change: String, before: Option<String>, after: Option<String> },
    /// An administrator created or revoked a professional–patient relationship through the admin
    /// API (`change`: `created`, `revoked`), with the relationship before and after, as JSON.
    AdminRelationshipChanged {
        relationship_id: String,
        organisation_id: Option<String>,
        actor: String,
        change: String,
        before: Option<String>,
        after: Option<String>,
    },
    /// An administrator rotated a signing key: the new key (`kid`, `alg`, when it signs from).
    SigningKeyRotated { kid: String, alg: String, actor: String, activates_at: i64 },
    /// An administrator retired a signing key: it no longer signs (still published for a while).
    SigningKeyRetired { kid: String, alg: String, actor: String },
}

impl AuditEvent {
    /// The stable name of the event (its serde tag).
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::CardLoginSucceeded { .. } => "card_login_succeeded",
            AuditEvent::CardLoginRefused { .. } => "card_login_refused",
            AuditEvent::CardRevocationFailOpen { .. } => "card_revocation_fail_open",
            AuditEvent::CardCertificateChanged { .. } => "card_certificate_changed",
            AuditEvent::CardAccountCreated { .. } => "card_account_created",
            AuditEvent::ForgedProxyHeader { .. } => "forged_proxy_header",
            AuditEvent::CertificateBindingMismatch { .. } => "certificate_binding_mismatch",
            AuditEvent::RevocationListRefreshFailed { .. } => "revocation_list_refresh_failed",
            AuditEvent::WebauthnRegistered { .. } => "webauthn_registered",
            AuditEvent::WebauthnRevoked { .. } => "webauthn_revoked",
            AuditEvent::WebauthnLoginSucceeded { .. } => "webauthn_login_succeeded",
            AuditEvent::WebauthnRefused { .. } => "webauthn_refused",
            AuditEvent::HabilitationDecision { .. } => "habilitation_decision",
            AuditEvent::RelationshipCreated { .. } => "relationship_created",
            AuditEvent::RelationshipEnded { .. } => "relationship_ended",
            AuditEvent::ProfileChanged { .. } => "profile_changed",
            AuditEvent::TokenExchanged { .. } => "token_exchanged",
            AuditEvent::PracticeChanged { .. } => "practice_changed",
            AuditEvent::PatientLinked { .. } => "patient_linked",
            AuditEvent::ClientRegistered { .. } => "client_registered",
            AuditEvent::ClientUpdated { .. } => "client_updated",
            AuditEvent::ClientDeleted { .. } => "client_deleted",
            AuditEvent::RegistrationTokenIssued { .. } => "registration_token_issued",
            AuditEvent::RegistrationTokenRevoked { .. } => "registration_token_revoked",
            AuditEvent::AdminAccessDenied { .. } => "admin_access_denied",
            AuditEvent::AdminRoleChanged { .. } => "admin_role_changed",
            AuditEvent::OrganisationChanged { .. } => "organisation_changed",
            AuditEvent::DepartmentChanged { .. } => "department_changed",
            AuditEvent::AccountChanged { .. } => "account_changed",
            AuditEvent::ClientChanged { .. } => "client_changed",
            AuditEvent::AdminRelationshipChanged { .. } => "admin_relationship_changed",
            AuditEvent::SigningKeyRotated { .. } => "signing_key_rotated",
            AuditEvent::SigningKeyRetired { .. } => "signing_key_retired",
        }
    }
}

/// How an event ended, as auditors filter it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
    /// Neither: a change or a notice (an administrator's edit, a key rotation).
    Info,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
            Outcome::Info => "info",
        }
    }
}

impl AuditEvent {
    /// The account the event is about, when there is one (person export and erasure find records
    /// by it).
    pub fn subject(&self) -> Option<&str> {
        use AuditEvent::*;
        match self {
            CardLoginSucceeded { account_id, .. }
            | CardCertificateChanged { account_id, .. }
            | CardAccountCreated { account_id, .. }
            | WebauthnRegistered { account_id, .. }
            | WebauthnRevoked { account_id, .. }
            | WebauthnLoginSucceeded { account_id, .. }
            | HabilitationDecision { account_id, .. }
            | PatientLinked { account_id, .. }
            | PracticeChanged { account_id, .. }
            | AdminRoleChanged { account_id, .. }
            | AccountChanged { account_id, .. } => Some(account_id),
            WebauthnRefused { account_id, .. } | TokenExchanged { account_id, .. } => account_id.as_deref(),
            RelationshipCreated { professional_id, .. } => Some(professional_id),
            CardLoginRefused { .. }
            | CardRevocationFailOpen { .. }
            | ForgedProxyHeader { .. }
            | CertificateBindingMismatch { .. }
            | RevocationListRefreshFailed { .. }
            | RelationshipEnded { .. }
            | ProfileChanged { .. }
            | ClientRegistered { .. }
            | ClientUpdated { .. }
            | ClientDeleted { .. }
            | RegistrationTokenIssued { .. }
            | RegistrationTokenRevoked { .. }
            | AdminAccessDenied { .. }
            | OrganisationChanged { .. }
            | DepartmentChanged { .. }
            | ClientChanged { .. }
            | AdminRelationshipChanged { .. }
            | SigningKeyRotated { .. }
            | SigningKeyRetired { .. } => None,
        }
    }

    /// Who acted, when the event names it (an account id, `cli`, `client:<id>`…); otherwise the
    /// subject acted on their own behalf.
    pub fn actor(&self) -> Option<&str> {
        use AuditEvent::*;
        match self {
            WebauthnRevoked { by, .. } => Some(by),
            TokenExchanged { actor_client, .. } => Some(actor_client),
            RelationshipCreated { actor, .. }
            | RelationshipEnded { actor, .. }
            | ProfileChanged { actor, .. }
            | PracticeChanged { actor, .. }
            | ClientRegistered { actor, .. }
            | ClientUpdated { actor, .. }
            | ClientDeleted { actor, .. }
            | RegistrationTokenIssued { actor, .. }
            | RegistrationTokenRevoked { actor, .. }
            | AdminAccessDenied { actor, .. }
            | AdminRoleChanged { actor, .. }
            | OrganisationChanged { actor, .. }
            | DepartmentChanged { actor, .. }
            | AccountChanged { actor, .. }
            | ClientChanged { actor, .. }
            | AdminRelationshipChanged { actor, .. }
            | SigningKeyRotated { actor, .. }
            | SigningKeyRetired { actor, .. } => Some(actor),
            CardLoginSucceeded { .. }
            | CardLoginRefused { .. }
            | CardRevocationFailOpen { .. }
            | CardCertificateChanged { .. }
            | CardAccountCreated { .. }
            | ForgedProxyHeader { .. }
            | CertificateBindingMismatch { .. }
            | RevocationListRefreshFailed { .. }
            | WebauthnRegistered { .. }
            | WebauthnLoginSucceeded { .. }
            | WebauthnRefused { .. }
            | HabilitationDecision { .. }
            | PatientLinked { .. } => None,
        }
    }

    pub fn outcome(&self) -> Outcome {
        use AuditEvent::*;
        match self {
            CardLoginSucceeded { .. } | WebauthnLoginSucceeded { .. } => Outcome::Success,
            HabilitationDecision { granted: true, .. } => Outcome::Success,
            HabilitationDecision { granted: false, .. } | AdminAccessDenied { .. } => Outcome::Denied,
            CardLoginRefused { .. }
            | WebauthnRefused { .. }
            | ForgedProxyHeader { .. }
            | CertificateBindingMismatch { .. }
            | RevocationListRefreshFailed { .. } => Outcome::Failure,
            CardRevocationFailOpen { .. }
            | CardCertificateChanged { .. }
            | CardAccountCreated { .. }
            | WebauthnRegistered { .. }
            | WebauthnRevoked { .. }
            | RelationshipCreated { .. }
            | PatientLinked { .. }
            | RelationshipEnded { .. }
            | ProfileChanged { .. }
            | PracticeChanged { .. }
            | TokenExchanged { .. }
            | ClientRegistered { .. }
            | ClientUpdated { .. }
            | ClientDeleted { .. }
            | RegistrationTokenIssued { .. }
            | RegistrationTokenRevoked { .. }
            | AdminRoleChanged { .. }
            | OrganisationChanged { .. }
            | DepartmentChanged { .. }
            | AccountChanged { .. }
            | ClientChanged { .. }
            | AdminRelationshipChanged { .. }
            | SigningKeyRotated { .. }
            | SigningKeyRetired { .. } => Outcome::Info,
        }
    }
}
