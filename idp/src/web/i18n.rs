//! Interface strings in French and English. The language comes from `ui_locales`, then the
//! browser's `Accept-Language`, then French (the service's users are in France).

use axum::http::{HeaderMap, header};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_', ';']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "fr" => Some(Lang::Fr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// First supported language of `ui_locales` (space separated), else of `Accept-Language`.
    pub fn negotiate(ui_locales: Option<&str>, headers: &HeaderMap) -> Lang {
        if let Some(lang) = ui_locales.and_then(|l| l.split(' ').find_map(Lang::from_tag)) {
            return lang;
        }
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut candidates: Vec<(f32, Lang)> = accept
            .split(',')
            .filter_map(|item| {
                let mut parts = item.split(';');
                let lang = Lang::from_tag(parts.next()?)?;
                let q = parts.find_map(|p| p.trim().strip_prefix("q=")).and_then(|q| q.parse().ok()).unwrap_or(1.0);
                Some((q, lang))
            })
            .collect();
        candidates.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        candidates.first().map(|c| c.1).unwrap_or(Lang::Fr)
    }
}

/// The strings of one language, passed to templates as `t`.
#[derive(Serialize)]
pub struct Texts {
    pub brand: &'static str,
    pub for_app: &'static str,
    pub login_title: &'static str,
    pub login_label: &'static str,
    pub login_hint: &'static str,
    pub password_label: &'static str,
    pub continue_: &'static str,
    #[serde(rename = "continue")]
    pub continue_alias: &'static str,
    pub bad_credentials: &'static str,
    pub too_many_attempts: &'static str,
    pub session_expired: &'static str,
    pub consent_title: &'static str,
    pub consent_intro: &'static str,
    pub allow: &'static str,
    pub deny: &'static str,
    pub error_title: &'static str,
    pub card_login: &'static str,
    pub card_hint: &'static str,
    pub card_refused_title: &'static str,
    pub card_retry: &'static str,
    pub card_other_way: &'static str,
    pub or: &'static str,
    pub card_required_title: &'static str,
    pub passkey_login: &'static str,
    pub key_login: &'static str,
    pub passkeys_title: &'static str,
    pub passkeys_none: &'static str,
    pub passkeys_add: &'static str,
    pub passkeys_name_label: &'static str,
    pub passkeys_rename: &'static str,
    pub passkeys_revoke: &'static str,
    pub passkeys_added: &'static str,
    pub passkeys_last_used: &'static str,
    pub passkeys_never: &'static str,
    pub passkeys_recent_login: &'static str,
    pub passkeys_login_first: &'static str,
    pub passkeys_revoked_notice: &'static str,
    pub passkeys_renamed_notice: &'static str,
    pub webauthn_needs_script: &'static str,
    pub card_required_text: &'static str,
    pub error_next: &'static str,
    pub error_code: &'static str,
    pub error_detail: &'static str,
    pub request_id: &'static str,
    pub logout_title: &'static str,
    pub logout_question: &'static str,
    pub logout_yes: &'static str,
    pub logout_no: &'static str,
    pub logged_out: &'static str,
    pub second_factor_title: &'static str,
    pub email_code_sent: &'static str,
    pub code_label: &'static str,
    pub totp_prompt: &'static str,
    pub recovery_prompt: &'static str,
    pub recovery_label: &'static str,
    pub resend_code: &'static str,
    pub code_resent: &'static str,
    pub resend_too_soon: &'static str,
    pub other_methods: &'static str,
    pub method_email: &'static str,
    pub method_totp: &'static str,
    pub method_recovery: &'static str,
    pub bad_code: &'static str,
    pub code_expired: &'static str,
    pub code_replayed: &'static str,
    pub locked: &'static str,
    pub no_second_factor: &'static str,
    pub new_password_label: &'static str,
    pub confirm_password_label: &'static str,
    pub save: &'static str,
    pub later: &'static str,
    pub password_rules: &'static str,
    pub passwords_differ: &'static str,
    pub password_weak: &'static str,
    pub invitation_title: &'static str,
    pub invitation_intro: &'static str,
    pub invitation_invalid: &'static str,
    pub invitation_done: &'static str,
    pub reset_title: &'static str,
    pub reset_intro: &'static str,
    pub reset_invalid: &'static str,
    pub reset_done: &'static str,
    pub forgot_link: &'static str,
    pub forgot_title: &'static str,
    pub forgot_intro: &'static str,
    pub forgot_send: &'static str,
    pub forgot_sent: &'static str,
    pub totp_setup_title: &'static str,
    pub totp_setup_intro: &'static str,
    pub totp_qr_label: &'static str,
    pub totp_manual: &'static str,
    pub totp_confirm: &'static str,
    pub recovery_codes_title: &'static str,
    pub recovery_codes_intro: &'static str,
    pub recovery_codes_once: &'static str,
    pub scope_openid: &'static str,
    pub scope_profile: &'static str,
    pub scope_email: &'static str,
    pub scope_phone: &'static str,
    pub scope_offline_access: &'static str,
    pub scope_psc: &'static str,
    pub scope_relationships: &'static str,
    /// Consent: one line per requested `patient_access` detail, followed by the patient and actions.
    pub consent_patient_access: &'static str,
    // Inactive accounts (crate::lifecycle::web)
    pub keep_title: &'static str,
    pub keep_account_label: &'static str,
    pub keep_intro: &'static str,
    pub keep_hint: &'static str,
    pub keep_button: &'static str,
    pub keep_done: &'static str,
    pub keep_invalid: &'static str,
    pub terms_title: &'static str,
}

pub fn texts(lang: Lang) -> &'static Texts {
    match lang {
        Lang::Fr => &FR,
        Lang::En => &EN,
    }
}

static FR: Texts = Texts {
    brand: "Habilis",
    for_app: "pour",
    login_title: "Connexion",
    login_label: "Identifiant",
    login_hint: "Professionnel de santé : votre identifiant national (idNat, par exemple 8 suivi du RPPS).",
    password_label: "Mot de passe",
    continue_: "Continuer",
    continue_alias: "Continuer",
    bad_credentials: "Identifiant ou mot de passe incorrect. Vérifiez-les puis réessayez.",
    too_many_attempts: "Trop de tentatives. Patientez quelques minutes avant de réessayer.",
    session_expired: "Cette page a expiré. Retournez à l'application et recommencez la connexion.",
    consent_title: "Autoriser l'accès",
    consent_intro: "Les informations suivantes seront communiquées à",
    allow: "Autoriser",
    deny: "Refuser",
    error_title: "Connexion impossible",
    card_login: "Se connecter avec ma carte CPS",
    card_hint: "Insérez votre carte dans le lecteur : le navigateur vous demandera de choisir son certificat, puis votre code PIN.",
    card_refused_title: "Carte refusée",
    card_retry: "Réessayer avec ma carte",
    card_other_way: "Me connecter autrement",
    or: "ou",
    card_required_title: "Carte CPS requise",
    passkey_login: "Me connecter avec une clé d'accès",
    key_login: "Utiliser ma clé de sécurité",
    passkeys_title: "Mes clés de sécurité et clés d'accès",
    passkeys_none: "Aucune clé n'est enregistrée sur votre compte.",
    passkeys_add: "Ajouter une clé",
    passkeys_name_label: "Nom de la clé",
    passkeys_rename: "Renommer",
    passkeys_revoke: "Révoquer",
    passkeys_added: "ajoutée le",
    passkeys_last_used: "dernière utilisation",
    passkeys_never: "jamais",
    passkeys_recent_login: "Pour ajouter une clé, reconnectez-vous avec deux facteurs (il y a moins de 10 minutes), puis revenez sur cette page.",
    passkeys_login_first: "Connectez-vous d'abord à une application qui utilise Habilis, puis revenez sur cette page.",
    passkeys_revoked_notice: "La clé a été révoquée : elle ne permet plus de se connecter.",
    passkeys_renamed_notice: "La clé a été renommée.",
    webauthn_needs_script: "L'ajout d'une clé nécessite JavaScript.",
    card_required_text: "Cette application demande une authentification par carte CPS (niveau eidas3) : un mot de passe et un code ne suffisent pas. Insérez votre carte dans le lecteur, puis continuez.",
    error_next: "Retournez à l'application et recommencez. Si le problème persiste, contactez son support en indiquant le code ci-dessous.",
    error_code: "Code",
    error_detail: "Détail technique",
    request_id: "Référence",
    logout_title: "Déconnexion",
    logout_question: "Voulez-vous vous déconnecter de Habilis et des applications de cette session ?",
    logout_yes: "Me déconnecter",
    logout_no: "Rester connecté",
    logged_out: "Vous êtes déconnecté. Vous pouvez fermer cette page.",
    second_factor_title: "Vérification en deux étapes",
    email_code_sent: "Un code à 6 chiffres, valable 10 minutes, a été envoyé à",
    code_label: "Code à 6 chiffres",
    totp_prompt: "Saisissez le code affiché par votre application d'authentification.",
    recovery_prompt: "Saisissez l'un de vos codes de secours. Chaque code ne sert qu'une fois.",
    recovery_label: "Code de secours",
    resend_code: "Renvoyer un code",
    code_resent: "Un nouveau code vous a été envoyé.",
    resend_too_soon: "Un code vient d'être envoyé. Patientez un peu avant d'en demander un autre.",
    other_methods: "Autre méthode :",
    method_email: "code par courriel",
    method_totp: "application d'authentification",
    method_recovery: "code de secours",
    bad_code: "Code incorrect. Vérifiez-le puis réessayez.",
    code_expired: "Ce code a expiré ou a déjà servi. Demandez-en un nouveau.",
    code_replayed: "Ce code a déjà servi. Attendez le code suivant de votre application.",
    locked: "Trop de tentatives : le compte est temporairement bloqué. Réessayez dans quelques minutes ou contactez votre administrateur.",
    no_second_factor: "Votre compte n'a pas de second facteur (adresse électronique ou application d'authentification). Contactez votre administrateur.",
    new_password_label: "Nouveau mot de passe",
    confirm_password_label: "Confirmez le mot de passe",
    save: "Enregistrer",
    later: "Plus tard",
    password_rules: "Au moins 12 caractères. Une phrase de plusieurs mots est plus sûre et plus facile à retenir. Évitez votre identifiant, votre nom et les mots de passe courants.",
    passwords_differ: "Les deux mots de passe sont différents. Saisissez-les à nouveau.",
    password_weak: "Ce mot de passe est trop simple ou trop courant. Choisissez-en un plus long, sans votre nom ni votre identifiant.",
    invitation_title: "Activer votre compte",
    invitation_intro: "Choisissez le mot de passe de votre compte. À la connexion, un code vous sera aussi demandé (par courriel, ou par une application d'authentification que vous pourrez configurer).",
    invitation_invalid: "Ce lien d'invitation n'est plus valable (déjà utilisé ou expiré). Demandez une nouvelle invitation à votre administrateur.",
    invitation_done: "Votre compte est activé. Retournez à votre application pour vous connecter.",
    reset_title: "Nouveau mot de passe",
    reset_intro: "Choisissez un nouveau mot de passe. Votre second facteur restera demandé à la connexion.",
    reset_invalid: "Ce lien n'est plus valable (déjà utilisé ou expiré). Demandez-en un nouveau.",
    reset_done: "Votre mot de passe est changé. Retournez à votre application pour vous connecter.",
    forgot_link: "Mot de passe oublié ?",
    forgot_title: "Mot de passe oublié",
    forgot_intro: "Indiquez votre identifiant : si un compte lui correspond, un lien pour choisir un nouveau mot de passe sera envoyé à son adresse électronique.",
    forgot_send: "Envoyer le lien",
    forgot_sent: "Si un compte correspond à cet identifiant, un lien vient d'être envoyé à son adresse électronique. Il est valable 30 minutes.",
    totp_setup_title: "Application d'authentification",
    totp_setup_intro: "Pour vous connecter sans attendre de courriel, scannez ce code avec une application d'authentification (FreeOTP, Aegis, Google Authenticator…), puis saisissez le code à 6 chiffres qu'elle affiche.",
    totp_qr_label: "Code QR à scanner avec votre application d'authentification",
    totp_manual: "Ou saisissez cette clé dans l'application :",
    totp_confirm: "Activer",
    recovery_codes_title: "Vos codes de secours",
    recovery_codes_intro: "Si vous perdez votre téléphone, chacun de ces codes permet une connexion. Conservez-les en lieu sûr, hors de votre téléphone.",
    recovery_codes_once: "Ces codes ne seront plus affichés. Chaque code ne sert qu'une fois.",
    scope_openid: "votre identifiant",
    scope_profile: "vos nom et prénom",
    scope_email: "votre adresse électronique",
    scope_phone: "votre numéro de téléphone",
    scope_offline_access: "un accès prolongé sans nouvelle connexion",
    scope_psc: "vos données d'exercice (identifiant national, professions, lieux d'exercice)",
    scope_relationships: "la gestion de vos relations de soin (solliciter un professionnel, y mettre fin)",
    consent_patient_access: "l'accès aux données du patient",
    keep_title: "Conserver mon compte",
    keep_account_label: "Compte",
    keep_intro: "Faute de connexion, ce compte sera supprimé le",
    keep_hint: "Confirmez pour le conserver : le délai d'inactivité repartira d'aujourd'hui.",
    keep_button: "Conserver mon compte",
    keep_done: "C'est noté : votre compte est conservé. Le délai d'inactivité repart d'aujourd'hui.",
    keep_invalid: "Ce lien n'est plus valable (déjà utilisé ou expiré). Pour conserver votre compte, connectez-vous à une application qui utilise Habilis, ou contactez votre administrateur.",
    terms_title: "Conditions d'utilisation",
};

static EN: Texts = Texts {
    brand: "Habilis",
    for_app: "for",
    login_title: "Log in",
    login_label: "Login",
    login_hint: "Health professionals: your national identifier (idNat, e.g. 8 followed by your RPPS).",
    password_label: "Password",
    continue_: "Continue",
    continue_alias: "Continue",
    bad_credentials: "Incorrect login or password. Check them and try again.",
    too_many_attempts: "Too many attempts. Wait a few minutes before trying again.",
    session_expired: "This page has expired. Go back to the application and start logging in again.",
    consent_title: "Allow access",
    consent_intro: "The following will be shared with",
    allow: "Allow",
    deny: "Deny",
    error_title: "Cannot log in",
    card_login: "Log in with my CPS card",
    card_hint: "Insert your card in the reader: the browser will ask you to choose its certificate, then for your PIN.",
    card_refused_title: "Card refused",
    card_retry: "Try again with my card",
    card_other_way: "Log in another way",
    or: "or",
    card_required_title: "CPS card required",
    passkey_login: "Log in with a passkey",
    key_login: "Use my security key",
    passkeys_title: "My security keys and passkeys",
    passkeys_none: "No key is registered on your account.",
    passkeys_add: "Add a key",
    passkeys_name_label: "Key name",
    passkeys_rename: "Rename",
    passkeys_revoke: "Revoke",
    passkeys_added: "added",
    passkeys_last_used: "last used",
    passkeys_never: "never",
    passkeys_recent_login: "To add a key, log in again with two factors (less than 10 minutes ago), then come back to this page.",
    passkeys_login_first: "Log in to an application that uses Habilis first, then come back to this page.",
    passkeys_revoked_notice: "The key was revoked: it no longer logs you in.",
    passkeys_renamed_notice: "The key was renamed.",
    webauthn_needs_script: "Adding a key needs JavaScript.",
    card_required_text: "This application requires a CPS card login (level eidas3): a password and a code are not enough. Insert your card in the reader, then continue.",
    error_next: "Go back to the application and start again. If it keeps failing, contact its support with the code below.",
    error_code: "Code",
    error_detail: "Technical detail",
    request_id: "Reference",
    logout_title: "Log out",
    logout_question: "Do you want to log out of Habilis and of the applications of this session?",
    logout_yes: "Log me out",
    logout_no: "Stay logged in",
    logged_out: "You are logged out. You may close this page.",
    second_factor_title: "Two-step verification",
    email_code_sent: "A 6-digit code, valid for 10 minutes, was sent to",
    code_label: "6-digit code",
    totp_prompt: "Enter the code shown by your authenticator app.",
    recovery_prompt: "Enter one of your recovery codes. Each code works once.",
    recovery_label: "Recovery code",
    resend_code: "Send a new code",
    code_resent: "A new code has been sent.",
    resend_too_soon: "A code was just sent. Wait a little before asking for another one.",
    other_methods: "Another method:",
    method_email: "code by email",
    method_totp: "authenticator app",
    method_recovery: "recovery code",
    bad_code: "Incorrect code. Check it and try again.",
    code_expired: "This code has expired or was already used. Ask for a new one.",
    code_replayed: "This code was already used. Wait for the next code of your app.",
    locked: "Too many attempts: the account is temporarily locked. Try again in a few minutes or contact your administrator.",
    no_second_factor: "Your account has no second factor (email address or authenticator app). Contact your administrator.",
    new_password_label: "New password",
    confirm_password_label: "Confirm the password",
    save: "Save",
    later: "Later",
    password_rules: "At least 12 characters. A phrase of several words is safer and easier to remember. Avoid your login, your name and common passwords.",
    passwords_differ: "The two passwords differ. Type them again.",
    password_weak: "This password is too simple or too common. Choose a longer one, without your name or login.",
    invitation_title: "Activate your account",
    invitation_intro: "Choose the password of your account. When you log in, a code will also be asked for (by email, or by an authenticator app you can set up).",
    invitation_invalid: "This invitation link is no longer valid (already used or expired). Ask your administrator for a new invitation.",
    invitation_done: "Your account is active. Go back to your application to log in.",
    reset_title: "New password",
    reset_intro: "Choose a new password. Your second factor will still be asked for when you log in.",
    reset_invalid: "This link is no longer valid (already used or expired). Ask for a new one.",
    reset_done: "Your password is changed. Go back to your application to log in.",
    forgot_link: "Forgot your password?",
    forgot_title: "Forgotten password",
    forgot_intro: "Enter your login: if an account matches it, a link to choose a new password will be sent to its email address.",
    forgot_send: "Send the link",
    forgot_sent: "If an account matches this login, a link has just been sent to its email address. It is valid for 30 minutes.",
    totp_setup_title: "Authenticator app",
    totp_setup_intro: "To log in without waiting for an email, scan this code with an authenticator app (FreeOTP, Aegis, Google Authenticator…), then enter the 6-digit code it shows.",
    totp_qr_label: "QR code to scan with your authenticator app",
    totp_manual: "Or type this key into the app:",
    totp_confirm: "Activate",
    recovery_codes_title: "Your recovery codes",
    recovery_codes_intro: "If you lose your phone, each of these codes allows one login. Keep them somewhere safe, away from your phone.",
    recovery_codes_once: "These codes will not be shown again. Each code works once.",
    scope_openid: "your identifier",
    scope_profile: "your name",
    scope_email: "your email address",
    scope_phone: "your phone number",
    scope_offline_access: "lasting access without logging in again",
    scope_psc: "your practice data (national identifier, professions, practice sites)",
    scope_relationships: "managing your care relationships (soliciting a professional, ending it)",
    consent_patient_access: "access to the data of patient",
    keep_title: "Keep my account",
    keep_account_label: "Account",
    keep_intro: "Without a login, this account will be deleted on",
    keep_hint: "Confirm to keep it: the inactivity period will start again today.",
    keep_button: "Keep my account",
    keep_done: "Done: your account is kept. The inactivity period starts again today.",
    keep_invalid: "This link is no longer valid (already used or expired). To keep your account, log in to an application that uses Habilis, or contact your administrator.",
    terms_title: "Terms of use",
};

/// What an error means for the person in front of the page, by OAuth error code; the technical
/// description (in English, as the protocol has it) is shown beneath for support.
pub fn error_message(lang: Lang, code: &str) -> &'static str {
    match (lang, code) {
        (Lang::Fr, "invalid_client") => "L'application qui vous a envoyé ici n'est pas reconnue par Habilis.",
        (Lang::En, "invalid_client") => "The application that sent you here is not known to Habilis.",
        (Lang::Fr, "temporarily_unavailable") => {
            "Le service est momentanément indisponible. Réessayez dans quelques instants."
        }
        (Lang::En, "temporarily_unavailable") => "The service is temporarily unavailable. Try again in a moment.",
        (Lang::Fr, "server_error") => "Une erreur interne est survenue. Elle a été enregistrée.",
        (Lang::En, "server_error") => "An internal error occurred. It has been recorded.",
        (Lang::Fr, "access_denied") => "L'accès est refusé.",
        (Lang::En, "access_denied") => "Access is denied.",
        (Lang::Fr, "invalid_request_uri") => "Cette demande de connexion a expiré ou a déjà servi.",
        (Lang::En, "invalid_request_uri") => "This login request has expired or was already used.",
        (Lang::Fr, _) => "La demande de connexion n'a pas pu être traitée.",
        (Lang::En, _) => "The login request could not be processed.",
    }
}

impl Texts {
    pub fn scope_label(&self, scope: &str) -> Option<&'static str> {
        match scope {
            "openid" => Some(self.scope_openid),
            "profile" => Some(self.scope_profile),
            "email" => Some(self.scope_email),
            "phone" => Some(self.scope_phone),
            "offline_access" => Some(self.scope_offline_access),
            "scope_all" => Some(self.scope_psc),
            "relationships" => Some(self.scope_relationships),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn negotiation() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::negotiate(None, &h), Lang::Fr);
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("de-DE, en-GB;q=0.8, fr;q=0.5"));
        assert_eq!(Lang::negotiate(None, &h), Lang::En);
        assert_eq!(Lang::negotiate(Some("es fr-CA"), &h), Lang::Fr);
    }
}
