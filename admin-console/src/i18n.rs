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
    ("recent_actions", "Actions d'administration récentes", "Recent admin actions"),
    (
        "no_audit_api",
        "Le journal d'audit n'est pas encore consultable par l'API d'administration : il reste lisible avec « habilis audit ».",
        "The audit log cannot be read through the admin API yet: use `habilis audit` on the server.",
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
