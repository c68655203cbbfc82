//! The console's words, in French (default) and English: the `Accept-Language` of the browser,
//! unless the person chose a language with the switch (a cookie).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, header};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

/// The cookie that remembers the language switch.
pub const LANG_COOKIE: &str = "habilis-admin-lang";

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    pub fn parse(code: &str) -> Option<Lang> {
        match code {
            "fr" => Some(Lang::Fr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The switch's choice, else the first of `fr`/`en` in `Accept-Language`, else French.
    pub fn negotiate(headers: &HeaderMap) -> Lang {
        if let Some(lang) = crate::session::cookie(headers, LANG_COOKIE).and_then(|c| Lang::parse(&c)) {
            return lang;
        }
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut ranked: Vec<(f32, Lang)> = accept
            .split(',')
            .filter_map(|item| {
                let mut parts = item.trim().split(';');
                let tag = parts.next()?.trim().to_ascii_lowercase();
                let q =
                    parts.find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok())).unwrap_or(1.0);
                let lang = Lang::parse(tag.split('-').next().unwrap_or(""))?;
                Some((q, lang))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked.first().map_or(Lang::Fr, |(_, l)| *l)
    }

    /// Every text of the console in this language, by key.
    pub fn texts(self) -> BTreeMap<&'static str, &'static str> {
        TEXTS.iter().map(|(k, fr, en)| (*k, if self == Lang::Fr { *fr } else { *en })).collect()
    }
}

/// (key, French, English).
const TEXTS: &[(&str, &str, &str)] = &[
    ("console", "Console d'administration", "Administration console"),
    ("dashboard", "Tableau de bord", "Dashboard"),
    ("accounts", "Comptes", "Accounts"),
    ("organisations", "Organisations", "Organisations"),
    ("roles", "Administrateurs d'organisation", "Organisation administrators"),
    ("profiles", "Profils d'habilitation", "Habilitation profiles"),
    ("logout", "Se déconnecter", "Log out"),
    ("login", "Se connecter", "Log in"),
    ("logged_in_as", "Connecté·e :", "Logged in as"),
    (
        "login_intro",
        "Connectez-vous avec votre compte Habilis (clé de sécurité ou passkey requise).",
        "Log in with your Habilis account (a security key or passkey is required).",
    ),
    ("logged_out", "Vous êtes déconnecté·e de la console.", "You are logged out of the console."),
    ("language", "Langue", "Language"),
    ("count_accounts", "Comptes visibles", "Accounts you can see"),
    ("count_organisations", "Organisations visibles", "Organisations you can see"),
    ("count_more", "plus de", "more than"),
    ("count_unavailable", "non disponible pour votre rôle", "not available to your role"),
    ("ind_heading", "Indicateurs de sécurité", "Security indicators"),
    ("ind_window", "Dernières", "Last"),
    ("ind_per_hour", "par heure", "per hour"),
    ("ind_generated", "calculés le", "computed at"),
    ("ind_in_window", "sur les dernières", "in the last"),
    ("ind_failed_logins", "Connexions échouées", "Failed logins"),
    ("ind_lockouts", "Verrouillages", "Lockouts"),
    ("ind_code_failures", "Codes à usage unique refusés", "Refused one-time codes"),
    ("ind_successful_logins", "Connexions réussies", "Successful logins"),
    ("ind_alerts", "Alertes", "Alerts"),
    ("ind_total", "Total", "Total"),
    ("ind_busiest_hour", "heure la plus chargée", "busiest hour"),
    ("ind_ages", "Fraîcheur", "Freshness"),
    ("ind_what", "Élément", "Item"),
    ("ind_crl", "Liste de révocation", "Revocation list"),
    ("ind_crl_old", "plus de 24 h : vérifiez sa mise à jour", "older than 24 h: check its refresh"),
    ("ind_no_crl", "aucune liste chargée", "none loaded"),
    ("ind_card_off", "connexion par carte CPS désactivée", "CPS card login is off"),
    ("ind_key", "Clé de signature", "Signing key"),
    ("ind_key_old", "plus de 90 jours : prévoyez une rotation", "older than 90 days: plan a rotation"),
    ("ind_backlog", "Enregistrements d'audit en attente d'écriture", "Audit records waiting to be written"),
    ("ind_audit_link", "Consulter le journal d'audit", "Open the audit log"),
    (
        "ind_forbidden",
        "Les indicateurs de sécurité de la plateforme sont réservés aux administrateurs de la plateforme et aux auditeurs.",
        "The platform's security indicators are for platform administrators and auditors.",
    ),
    (
        "ind_unavailable",
        "Les indicateurs de sécurité sont momentanément indisponibles.",
        "The security indicators are unavailable for the moment.",
    ),
    ("search", "Rechercher", "Search"),
    ("search_text", "Nom, identifiant ou courriel", "Name, login or email"),
    ("kind", "Type", "Kind"),
    ("status", "Statut", "Status"),
    ("any", "Tous", "Any"),
    ("professional", "Professionnel·le", "Professional"),
    ("patient", "Patient·e", "Patient"),
    ("administrator", "Administrateur·rice", "Administrator"),
    ("invited", "Invité·e", "Invited"),
    ("active", "Actif", "Active"),
    ("disabled", "Désactivé", "Disabled"),
    ("login_id", "Identifiant", "Login"),
    ("name", "Nom", "Name"),
    ("email", "Courriel", "Email"),
    ("actions", "Actions", "Actions"),
    ("disable", "Désactiver", "Disable"),
    ("enable", "Réactiver", "Enable"),
    ("next_page", "Page suivante", "Next page"),
    ("no_results", "Aucun résultat.", "No results."),
    ("invite", "Inviter un compte", "Invite an account"),
    ("invite_button", "Envoyer l'invitation", "Send the invitation"),
    ("id_nat", "Identifiant national (RPPS/ADELI)", "National identifier (RPPS/ADELI)"),
    ("given_name", "Prénom", "Given name"),
    ("family_name", "Nom de famille", "Family name"),
    ("organisation", "Organisation", "Organisation"),
    ("none", "Aucune", "None"),
    ("new_organisation", "Créer une organisation", "Create an organisation"),
    ("create", "Créer", "Create"),
    ("identifier_type", "Type d'identifiant (ex. FINESS)", "Identifier type (e.g. FINESS)"),
    ("identifier", "Identifiant", "Identifier"),
    ("grant_org_admin", "Nommer un administrateur d'organisation", "Appoint an organisation administrator"),
    ("account_login", "Identifiant du compte", "Account login"),
    ("grant", "Nommer", "Appoint"),
    ("role", "Rôle", "Role"),
    ("account", "Compte", "Account"),
    ("granted_by", "Accordé par", "Granted by"),
    ("description", "Description", "Description"),
    ("kinds", "Relations couvertes", "Relationships covered"),
    ("profile_actions", "Actions permises", "Allowed actions"),
    ("datatypes", "Types de données", "Data types"),
    ("clients", "Applications", "Applications"),
    ("min_acr", "Niveau de connexion minimal", "Minimum login level"),
    ("professions", "Professions", "Professions"),
    ("condition", "Condition", "Condition"),
    ("back", "Retour", "Back"),
    ("done_invited", "Invitation envoyée.", "Invitation sent."),
    ("done_disabled", "Compte désactivé.", "Account disabled."),
    ("done_enabled", "Compte réactivé.", "Account enabled."),
    (
        "done_unlocked",
        "Verrou levé : le mot de passe et les codes sont de nouveau acceptés.",
        "Lock lifted: the password and codes are accepted again.",
    ),
    ("locked_until", "Verrouillé jusqu'à", "Locked until"),
    (
        "locked_help",
        "Après des échecs répétés, le mot de passe et les codes sont refusés jusqu'à cette heure (UTC) ; la carte CPS et les clés de sécurité restent acceptées.",
        "After repeated failures the password and codes are refused until this time (UTC); the CPS card and security keys are still accepted.",
    ),
    ("unlock", "Lever le verrou", "Lift the lock"),
    ("done_organisation", "Organisation créée.", "Organisation created."),
    ("done_granted", "Rôle accordé.", "Role granted."),
    ("error_title", "Action impossible", "Action refused"),
    ("error_page_title", "Erreur", "Error"),
    ("expired", "Votre session a expiré : reconnectez-vous.", "Your session expired: log in again."),
    (
        "csrf",
        "Le formulaire a expiré ; rechargez la page et recommencez.",
        "The form expired; reload the page and try again.",
    ),
    (
        "no_role",
        "Ce compte n'a pas de rôle d'administration (ou la connexion n'a pas le niveau requis).",
        "This account holds no administration role (or the login is not strong enough).",
    ),
    ("unknown_login", "Aucun compte n'a cet identifiant.", "No account has this login."),
    (
        "habilis_down",
        "Habilis ne répond pas ; réessayez dans un instant.",
        "Habilis does not answer; try again in a moment.",
    ),
    ("not_found", "Cette page n'existe pas.", "This page does not exist."),
    ("assigned_profiles", "Profils d'habilitation attribués", "Assigned habilitation profiles"),
    (
        "assignment_help",
        "Un profil « sur attribution » ne s'applique qu'aux professionnel·les à qui il est attribué, partout ou pour les relations d'une organisation.",
        "A profile \"on assignment\" applies only to the professionals it is assigned to, everywhere or for the relationships of one organisation.",
    ),
    ("profile", "Profil", "Profile"),
    ("scope", "Portée", "Scope"),
    ("platform_wide", "Toute la plateforme", "Platform-wide"),
    ("assign_profile", "Attribuer un profil", "Assign a profile"),
    ("assign", "Attribuer", "Assign"),
    ("unassign", "Retirer", "Remove"),
    ("applies_to_all", "s'applique déjà à tous", "applies to everyone anyway"),
    ("no_assignment", "Aucun profil attribué.", "No profile assigned."),
    ("done_assigned", "Profil attribué.", "Profile assigned."),
    ("choose_profile", "Choisissez un profil à attribuer.", "Choose a profile to assign."),
    ("done_unassigned", "Attribution retirée.", "Assignment removed."),
    // Clients
    ("client_search", "Identifiant ou nom de l'application", "Application id or name"),
    ("client_id", "Application (client_id)", "Application (client_id)"),
    ("auth_method", "Authentification au jeton", "Token authentication"),
    ("has_secret", "secret enregistré", "secret stored"),
    ("client_valid", "Valide", "Valid"),
    ("client_invalid", "Refusée (métadonnées invalides)", "Refused (invalid metadata)"),
    ("self_registered", "auto-enregistrée", "self-registered"),
    ("registration", "Enregistrement", "Registration"),
    ("registered_by_admin", "Par un administrateur", "By an administrator"),
    ("client_metadata", "Métadonnées (RFC 7591)", "Metadata (RFC 7591)"),
    ("created_at", "Créé le", "Created"),
    ("updated_at", "Modifié le", "Updated"),
    // Relationships
    ("relationships", "Relations de soin", "Care relationships"),
    ("relationship_kind", "Nature", "Kind"),
    ("relationship_active", "Active", "Active"),
    ("relationship_revoked", "Révoquée", "Revoked"),
    ("relationship_expired", "Expirée", "Expired"),
    ("ins_value", "INS du patient", "Patient's INS"),
    ("ins_oid", "OID de l'INS", "INS OID"),
    ("local_id", "Identifiant local du patient", "Patient's local id"),
    ("namespace", "Application de l'identifiant local", "Application of the local id"),
    ("valid_period", "Validité", "Validity"),
    ("revoke", "Révoquer", "Revoke"),
    (
        "done_revoked",
        "Relation révoquée : plus aucun jeton n'est accordé par elle.",
        "Relationship revoked: no token is granted through it any more.",
    ),
    // Audit log
    ("audit", "Journal d'audit", "Audit log"),
    ("since", "Depuis (UTC)", "Since (UTC)"),
    ("until", "Jusqu'à (UTC)", "Until (UTC)"),
    ("event", "Événement", "Event"),
    ("account_as", "Rôle du compte dans l'événement", "Part of the account in the event"),
    ("as_actor", "auteur", "as actor"),
    ("as_subject", "concerné", "as subject"),
    ("outcome", "Résultat", "Outcome"),
    ("outcome_success", "Succès", "Success"),
    ("outcome_failure", "Échec", "Failure"),
    ("outcome_denied", "Refus", "Denied"),
    ("outcome_info", "Information", "Information"),
    (
        "audit_help",
        "Compte : identifiant de connexion, identifiant interne ou valeur exacte (account:…, client:…). Les enregistrements arrivent dans le journal quelques secondes après l'action.",
        "Account: a login, an internal id or an exact value (account:…, client:…). Records reach the log a few seconds after the action.",
    ),
    ("audit_export", "Exporter (JSON lines)", "Export (JSON lines)"),
    ("time", "Heure (UTC)", "Time (UTC)"),
    ("actor", "Auteur", "Actor"),
    ("subject", "Compte concerné", "Subject"),
    ("ip", "Adresse IP", "IP address"),
    ("record_details", "Détails de l'enregistrement", "Record details"),
    // Signing keys
    ("keys", "Clés de signature", "Signing keys"),
    ("kid", "Identifiant (kid)", "Key id (kid)"),
    ("alg", "Algorithme", "Algorithm"),
    ("key_state", "État", "State"),
    ("key_pending", "En attente", "Pending"),
    ("key_active", "Active (signe)", "Active (signing)"),
    ("key_superseded", "Remplacée", "Superseded"),
    ("key_retired-published", "Retirée, encore publiée", "Retired, still published"),
    ("key_expired", "Expirée", "Expired"),
    ("age", "Âge", "Age"),
    ("activates_at", "Signe à partir du", "Signs from"),
    ("retired_at", "Retirée le", "Retired"),
    ("published_until", "Publiée jusqu'au", "Published until"),
    ("rotate_key", "Nouvelle clé de signature", "New signing key"),
    (
        "rotate_help",
        "La nouvelle clé est publiée tout de suite et signe après le délai d'activation, quand les applications l'ont dans leur cache du JWKS.",
        "The new key is published at once and signs after the activation delay, once applications hold it in their cached JWKS.",
    ),
    ("activate_now", "Signer tout de suite (rotation d'urgence)", "Sign with it at once (emergency rotation)"),
    ("rotate", "Créer la clé", "Create the key"),
    ("done_rotated", "Nouvelle clé de signature créée.", "New signing key created."),
];

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn every_text_is_translated() {
        for (key, fr, en) in TEXTS {
            assert!(!fr.is_empty() && !en.is_empty(), "{key}");
        }
        assert_eq!(Lang::Fr.texts().len(), TEXTS.len(), "keys are unique");
    }

    #[test]
    fn negotiation() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::negotiate(&h), Lang::Fr);
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("de-DE, en-GB;q=0.8, fr;q=0.5"));
        assert_eq!(Lang::negotiate(&h), Lang::En);
        h.insert(header::COOKIE, HeaderValue::from_static("habilis-admin-lang=fr"));
        assert_eq!(Lang::negotiate(&h), Lang::Fr, "the switch wins");
    }
}
