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
    // --- lifecycle (inactive accounts, person export and erasure) ---
    /// An inactive account was warned of its deletion (`stage` 1: the warning, 2: the reminder),
    /// through `channel` (`email`), by `actor` (`scheduler` or `cli`).
    InactivityWarningSent { account_id: String, stage: i64, deletion_at: i64, channel: String, actor: String },
    /// An inactive account could not be warned: `reason` is `no_channel` (no email address: it is
    /// deleted at the limit all the same) or `delivery_failed` (tried again at the next run).
    InactivityWarningUndeliverable { account_id: String, stage: i64, deletion_at: i64, reason: String, actor: String },
    /// The owner objected to the deletion with their "keep my account" link: the inactivity clock
    /// restarts. `deletion_at` is the date that was announced.
    AccountKept { account_id: String, deletion_at: i64 },
    /// An account was deleted with its factors, sessions, consents, memberships and roles.
    /// `pseudonym` replaces the account in the audit log; `reason` is `inactive` or `erasure`;
    /// `actor` is `scheduler`, `cli` or an administrator.
    AccountDeleted { pseudonym: String, reason: String, actor: String, relationships_ended: u64 },
    /// Everything held on a person was exported (`habilis person export`, admin API).
    PersonExported { account_id: String, actor: String },
    /// A person's data was erased on request: their account deleted (see `account_deleted`) and
    /// `audit_records` records of the audit log pseudonymised.
    PersonErased { pseudonym: String, actor: String, audit_records: u64 },
    // --- assignments (habilitation profiles assigned by administrators) ---
    /// An administrator assigned a habilitation profile to a professional: platform-wide
    /// (`organisation_id` null) or for the relationships of one organisation.
    ProfileAssigned { account_id: String, profile: String, organisation_id: Option<String>, actor: String },
    /// An administrator removed a professional's assignment of a profile (same scope fields).
    ProfileUnassigned { account_id: String, profile: String, organisation_id: Option<String>, actor: String },
    // --- audit log (retention, export) ---
    /// Records of the audit log written before `before` (seq `first_seq` to `last_seq`) were
    /// archived to `archive` (SHA-256 `archive_sha256`) and deleted; a signed anchor keeps the rest
    /// verifiable.
    AuditPurged {
        actor: String,
        before: i64,
        first_seq: i64,
        last_seq: i64,
        records: u64,
        archive: String,
        archive_sha256: String,
    },
    /// Records of the audit log were exported (`habilis audit export`, admin API): who, which
    /// period and filters, how many.
    AuditExported { actor: String, since: Option<i64>, until: Option<i64>, filters: Option<String>, records: u64 },
    // --- security events (logins, factors, tokens, consents, alerts) ---
    /// A login step succeeded with `factor` (`password`, `email_otp`, `totp`, `recovery_code`;
    /// card and security-key logins have their own events).
    LoginSucceeded { account_id: String, factor: String },
    /// A login step failed. `reason` is a stable code: `unknown_account`, `bad_password`,
    /// `no_password`, `account_disabled`, `bad_code`, `expired_code`, `replayed_code`, `locked`.
    /// Never the typed password or code; for an unknown login only `login_hash` (a keyed hash of
    /// the typed identifier, so that repeated attempts on one name can be correlated).
    LoginFailed { account_id: Option<String>, login_hash: Option<String>, factor: String, reason: String },
    /// The level of a session was raised for the same account (step-up), from `from_acr`.
    StepUpCompleted { account_id: String, from_acr: Option<String>, to_acr: Option<String> },
    /// Repeated failures locked a login name until `until` (Unix seconds); `factor` is the step
    /// whose failure locked it.
    LockedOut { account_id: Option<String>, login_hash: Option<String>, factor: String, until: i64 },
    /// A factor was set up by its owner (`totp`, `recovery_code`).
    FactorEnrolled { account_id: String, factor: String },
    /// A password was set: `via` is `invitation` (first password) or `reset`.
    PasswordChanged { account_id: String, via: String },
    /// An authorization code was exchanged at the token endpoint, creating grant `grant_id`.
    AuthorizationCodeRedeemed { account_id: String, grant_id: String },
    /// An authorization code was presented again: the grant issued from it is revoked.
    AuthorizationCodeReplayed { grant_id: String },
    /// The token endpoint issued tokens (`authorization_code`, `client_credentials`; refreshes and
    /// exchanges have their own events). `account_id`/`grant_id` are absent for a client alone.
    TokenIssued { grant_type: String, account_id: Option<String>, grant_id: Option<String> },
    /// A refresh token was used for new tokens.
    TokenRefreshed { account_id: String, grant_id: String },
    /// A token or a grant was revoked: `via` is `revocation_endpoint` or `logout`; `token_type` is
    /// `access_token` or `refresh_token` (the grant with all its tokens).
    TokenRevoked { account_id: Option<String>, grant_id: Option<String>, token_type: String, via: String },
    /// A refresh token was used twice: its whole grant is revoked.
    RefreshTokenReused { account_id: Option<String>, grant_id: String },
    /// The user allowed a client `scope` on the consent page.
    ConsentGiven { account_id: String, client_id: String, scope: String },
    /// A consent was withdrawn (`actor`: `cli` or the account).
    ConsentWithdrawn { account_id: String, client_id: String, actor: String },
    /// An alert rule fired (see `crate::alerts`); `details` is the JSON sent to the webhook.
    AlertRaised { rule: String, severity: String, summary: String, details: String },
}

impl AuditEvent {
    /// The stable name of the event (its serde tag).
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::AuditPurged { .. } => "audit_purged",
            AuditEvent::AuditExported { .. } => "audit_exported",
            AuditEvent::LoginSucceeded { .. } => "login_succeeded",
            AuditEvent::LoginFailed { .. } => "login_failed",
            AuditEvent::StepUpCompleted { .. } => "step_up_completed",
            AuditEvent::LockedOut { .. } => "locked_out",
            AuditEvent::FactorEnrolled { .. } => "factor_enrolled",
            AuditEvent::PasswordChanged { .. } => "password_changed",
            AuditEvent::AuthorizationCodeRedeemed { .. } => "authorization_code_redeemed",
            AuditEvent::AuthorizationCodeReplayed { .. } => "authorization_code_replayed",
            AuditEvent::TokenIssued { .. } => "token_issued",
            AuditEvent::TokenRefreshed { .. } => "token_refreshed",
            AuditEvent::TokenRevoked { .. } => "token_revoked",
            AuditEvent::RefreshTokenReused { .. } => "refresh_token_reused",
            AuditEvent::ConsentGiven { .. } => "consent_given",
            AuditEvent::ConsentWithdrawn { .. } => "consent_withdrawn",
            AuditEvent::AlertRaised { .. } => "alert_raised",
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
            AuditEvent::InactivityWarningSent { .. } => "inactivity_warning_sent",
            AuditEvent::InactivityWarningUndeliverable { .. } => "inactivity_warning_undeliverable",
            AuditEvent::AccountKept { .. } => "account_kept",
            AuditEvent::AccountDeleted { .. } => "account_deleted",
            AuditEvent::PersonExported { .. } => "person_exported",
            AuditEvent::PersonErased { .. } => "person_erased",
            AuditEvent::ProfileAssigned { .. } => "profile_assigned",
            AuditEvent::ProfileUnassigned { .. } => "profile_unassigned",
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
            AuditPurged { .. } | AuditExported { .. } => None,
            LoginSucceeded { account_id, .. }
            | StepUpCompleted { account_id, .. }
            | FactorEnrolled { account_id, .. }
            | PasswordChanged { account_id, .. }
            | AuthorizationCodeRedeemed { account_id, .. }
            | TokenRefreshed { account_id, .. }
            | ConsentGiven { account_id, .. }
            | ConsentWithdrawn { account_id, .. } => Some(account_id),
            LoginFailed { account_id, .. }
            | LockedOut { account_id, .. }
            | TokenIssued { account_id, .. }
            | TokenRevoked { account_id, .. }
            | RefreshTokenReused { account_id, .. } => account_id.as_deref(),
            AuthorizationCodeReplayed { .. } | AlertRaised { .. } => None,
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
            InactivityWarningSent { account_id, .. }
            | InactivityWarningUndeliverable { account_id, .. }
            | AccountKept { account_id, .. }
            | PersonExported { account_id, .. } => Some(account_id),
            AccountDeleted { pseudonym, .. } | PersonErased { pseudonym, .. } => Some(pseudonym),
            ProfileAssigned { account_id, .. } | ProfileUnassigned { account_id, .. } => Some(account_id),
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
            AuditPurged { actor, .. } | AuditExported { actor, .. } => Some(actor),
            ConsentWithdrawn { actor, .. } => Some(actor),
            LoginSucceeded { .. }
            | LoginFailed { .. }
            | StepUpCompleted { .. }
            | LockedOut { .. }
            | FactorEnrolled { .. }
            | PasswordChanged { .. }
            | AuthorizationCodeRedeemed { .. }
            | AuthorizationCodeReplayed { .. }
            | TokenIssued { .. }
            | TokenRefreshed { .. }
            | TokenRevoked { .. }
            | RefreshTokenReused { .. }
            | ConsentGiven { .. }
            | AlertRaised { .. } => None,
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
            InactivityWarningSent { actor, .. }
            | InactivityWarningUndeliverable { actor, .. }
            | AccountDeleted { actor, .. }
            | PersonExported { actor, .. }
            | PersonErased { actor, .. } => Some(actor),
            ProfileAssigned { actor, .. } | ProfileUnassigned { actor, .. } => Some(actor),
            AccountKept { .. } => None,
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
            AuditPurged { .. } | AuditExported { .. } => Outcome::Info,
            LoginSucceeded { .. }
            | StepUpCompleted { .. }
            | AuthorizationCodeRedeemed { .. }
            | TokenIssued { .. }
            | TokenRefreshed { .. } => Outcome::Success,
            LoginFailed { .. } | LockedOut { .. } | AuthorizationCodeReplayed { .. } | RefreshTokenReused { .. } => {
                Outcome::Failure
            }
            FactorEnrolled { .. }
            | PasswordChanged { .. }
            | TokenRevoked { .. }
            | ConsentGiven { .. }
            | ConsentWithdrawn { .. }
            | AlertRaised { .. } => Outcome::Info,
            CardLoginSucceeded { .. } | WebauthnLoginSucceeded { .. } => Outcome::Success,
            InactivityWarningSent { .. } | AccountKept { .. } | PersonExported { .. } => Outcome::Success,
            InactivityWarningUndeliverable { .. } => Outcome::Failure,
            AccountDeleted { .. } | PersonErased { .. } => Outcome::Info,
            ProfileAssigned { .. } | ProfileUnassigned { .. } => Outcome::Info,
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
