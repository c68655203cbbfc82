//! The messages Habilis sends, from the theme's `mail/` folder (embedded at build time, like the
//! page templates).
//!
//! A message kind is three templates per language: `<kind>.<lang>.subject.txt`, `<kind>.<lang>.txt`
//! and `<kind>.<lang>.html`. minijinja escapes only templates whose names end in `.html`, which is
//! exactly right here: the HTML part is escaped (a client name cannot inject markup) and the plain
//! text and subject are not (no `&amp;` in a text mail). Undefined values are errors, so a typo in
//! a template fails the tests instead of sending a message with a blank where the code should be.

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, context};
use serde::Serialize;

use super::MailError;

/// The product name shown in messages.
const BRAND: &str = "Habilis";

macro_rules! mail_file {
    ($name:literal) => {
        ($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../themes/default/mail/", $name)))
    };
}

const TEMPLATES: &[(&str, &str)] = &[
    mail_file!("layout.html"),
    mail_file!("otp_code.fr.subject.txt"),
    mail_file!("otp_code.fr.txt"),
    mail_file!("otp_code.fr.html"),
    mail_file!("otp_code.en.subject.txt"),
    mail_file!("otp_code.en.txt"),
    mail_file!("otp_code.en.html"),
    mail_file!("password_reset.fr.subject.txt"),
    mail_file!("password_reset.fr.txt"),
    mail_file!("password_reset.fr.html"),
    mail_file!("password_reset.en.subject.txt"),
    mail_file!("password_reset.en.txt"),
    mail_file!("password_reset.en.html"),
    mail_file!("invitation.fr.subject.txt"),
    mail_file!("invitation.fr.txt"),
    mail_file!("invitation.fr.html"),
    mail_file!("invitation.en.subject.txt"),
    mail_file!("invitation.en.txt"),
    mail_file!("invitation.en.html"),
    mail_file!("inactivity_warning.fr.subject.txt"),
    mail_file!("inactivity_warning.fr.txt"),
    mail_file!("inactivity_warning.fr.html"),
    mail_file!("inactivity_warning.en.subject.txt"),
    mail_file!("inactivity_warning.en.txt"),
    mail_file!("inactivity_warning.en.html"),
    mail_file!("account_locked.fr.subject.txt"),
    mail_file!("account_locked.fr.txt"),
    mail_file!("account_locked.fr.html"),
    mail_file!("account_locked.en.subject.txt"),
    mail_file!("account_locked.en.txt"),
    mail_file!("account_locked.en.html"),
];

/// Message kinds that have templates in every language of [`LANGS`].
pub const KINDS: &[&str] = &["otp_code", "password_reset", "invitation", "inactivity_warning", "account_locked"];
/// Languages of the messages; the first is the fallback (the service's users are in France).
pub const LANGS: &[&str] = &["fr", "en"];

/// A message ready to address: see [`super::OutgoingMail::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedMail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Like [`super::OutgoingMail`], the bodies hold one-time codes.
impl std::fmt::Debug for RenderedMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedMail").field("subject", &self.subject).finish_non_exhaustive()
    }
}

pub struct MailTemplates {
    env: Environment<'static>,
}

impl Default for MailTemplates {
    fn default() -> Self {
        Self::new()
    }
}

impl MailTemplates {
    pub fn new() -> MailTemplates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        // Block tags on their own lines leave no blank lines behind, and text parts keep their
        // final newline.
        match minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
        {
            Ok(syntax) => env.set_syntax(syntax),
            Err(e) => tracing::error!(error = %e, "mail template syntax configuration"),
        }
        for (name, source) in TEMPLATES {
            // The templates are part of the binary; the tests below render every one of them.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "invalid mail template");
            }
        }
        MailTemplates { env }
    }

    /// Renders message `kind` in `lang` (`fr`, `en`, or a tag such as `en-GB`; anything else gets
    /// French) with `context`, which every template also sees with `lang` and `brand`.
    pub fn render<C: Serialize>(&self, kind: &str, lang: &str, context: C) -> Result<RenderedMail, MailError> {
        let lang = mail_lang(lang);
        let context = context! { lang => lang, brand => BRAND, ..minijinja::Value::from(Serde(&context)) };
        let subject = self.render_one(&format!("{kind}.{lang}.subject.txt"), &context)?;
        Ok(RenderedMail {
            // A subject is one header line: no stray newline from the template may fold it.
            subject: subject.split_whitespace().collect::<Vec<_>>().join(" "),
            text: self.render_one(&format!("{kind}.{lang}.txt"), &context)?,
            html: self.render_one(&format!("{kind}.{lang}.html"), &context)?,
        })
    }

    /// The email one-time code: `code` valid for `minutes`, optionally naming the application the
    /// person is signing in to.
    pub fn otp_code(
        &self,
        lang: &str,
        code: &str,
        minutes: u32,
        client_name: Option<&str>,
    ) -> Result<RenderedMail, MailError> {
        self.render("otp_code", lang, context! { code => code, minutes => minutes, client_name => client_name })
    }

    /// The password-reset link mail.
    pub fn password_reset(&self, lang: &str, link: &str, minutes: u32) -> Result<RenderedMail, MailError> {
        self.render("password_reset", lang, context! { link => link, minutes => minutes })
    }

    /// The invitation of an account created by an administrator: `link` sets the password, valid
    /// for `days`; `login` is what the person will type to log in.
    pub fn invitation(&self, lang: &str, link: &str, login: &str, days: u32) -> Result<RenderedMail, MailError> {
        self.render("invitation", lang, context! { link => link, login => login, days => days })
    }

    /// The holder is told their login is locked: until when (a UTC date and time, already
    /// formatted) and what to do.
    pub fn account_locked(&self, lang: &str, until: &str) -> Result<RenderedMail, MailError> {
        self.render("account_locked", lang, context! { until => until })
    }

    fn render_one(&self, name: &str, context: &minijinja::Value) -> Result<String, MailError> {
        let template_error =
            |e: minijinja::Error| MailError::Template { name: name.to_string(), reason: e.to_string() };
        self.env.get_template(name).map_err(template_error)?.render(context).map_err(template_error)
    }
}

/// The message language for a requested one: its primary subtag if supported, else French.
fn mail_lang(lang: &str) -> &'static str {
    let primary = lang.trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
    LANGS.iter().copied().find(|l| *l == primary).unwrap_or(LANGS[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_every_template_compiles() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for kind in KINDS {
            for lang in LANGS {
                for suffix in ["subject.txt", "txt", "html"] {
                    let name = format!("{kind}.{lang}.{suffix}");
                    assert!(TEMPLATES.iter().any(|(n, _)| *n == name), "missing {name}");
                }
            }
        }
    }

    #[test]
    fn mail_otp_code_fr_and_en() {
        let templates = MailTemplates::new();
        let fr = templates.otp_code("fr", "482915", 10, Some("Portail Santé")).unwrap();
        assert_eq!(fr.subject, "Votre code de connexion Habilis");
        assert!(fr.text.contains("\n    482915\n"), "{}", fr.text);
        assert!(fr.text.contains("10 minutes"), "{}", fr.text);
        assert!(fr.text.contains("Portail Santé"), "{}", fr.text);
        assert!(fr.text.contains("Ne communiquez jamais ce code"), "{}", fr.text);
        assert!(fr.text.contains("ne vous le demanderont jamais"), "{}", fr.text);
        assert!(fr.html.contains(">482915</span>"), "{}", fr.html);
        assert!(fr.html.contains("<html lang=\"fr\">"), "{}", fr.html);
        assert!(!fr.text.contains("{{") && !fr.html.contains("{{") && !fr.text.contains("{%"));

        let en = templates.otp_code("en-GB", "482915", 1, None).unwrap();
        assert_eq!(en.subject, "Your Habilis sign-in code");
        assert!(en.text.contains("valid for 1 minute and"), "{}", en.text);
        assert!(en.text.contains("Here is your code to sign in with Habilis:"), "{}", en.text);
        assert!(en.text.contains("Never share this code"), "{}", en.text);
        assert!(en.text.contains("staff will never ask you for it"), "{}", en.text);
        assert!(en.html.contains("<html lang=\"en\">"), "{}", en.html);
    }

    #[test]
    fn mail_code_is_never_in_subject_or_preheader() {
        let templates = MailTemplates::new();
        for lang in LANGS {
            let mail = templates.otp_code(lang, "739104", 5, None).unwrap();
            assert!(!mail.subject.contains("739104"));
            let preheader_end = mail.html.find("</div>").unwrap();
            assert!(!mail.html[..preheader_end].contains("739104"), "{lang}");
        }
    }

    #[test]
    fn mail_html_is_escaped_text_is_not() {
        let templates = MailTemplates::new();
        let mail = templates.otp_code("en", "123456", 10, Some("<b>Dr & Co</b>")).unwrap();
        assert!(mail.html.contains("&lt;b&gt;Dr &amp; Co&lt;&#x2f;b&gt;"), "{}", mail.html);
        assert!(mail.text.contains("<b>Dr & Co</b>"), "{}", mail.text);
    }

    #[test]
    fn mail_unknown_language_falls_back_to_french() {
        assert_eq!(mail_lang("de"), "fr");
        assert_eq!(mail_lang(""), "fr");
        assert_eq!(mail_lang("EN_us"), "en");
        let mail = MailTemplates::new().otp_code("de", "123456", 10, None).unwrap();
        assert!(mail.subject.starts_with("Votre code"));
    }

    #[test]
    fn mail_unknown_kind_or_missing_value_is_an_error() {
        let templates = MailTemplates::new();
        let err = templates.render("nope", "fr", context! {}).unwrap_err().to_string();
        assert!(err.contains("nope.fr.subject.txt"), "{err}");
        let err = templates.render("otp_code", "fr", context! { minutes => 3 }).unwrap_err().to_string();
        assert!(err.contains("otp_code.fr"), "{err}");
    }

    #[test]
    fn mail_invitation_names_the_login_and_escapes_it_in_html() {
        let templates = MailTemplates::new();
        let link = "https://idp.example/invitation?token=abc";
        let fr = templates.invitation("fr", link, "jean<b>@example.org", 7).unwrap();
        assert_eq!(fr.subject, "Votre compte Habilis vous attend");
        assert!(fr.text.contains(link) && fr.text.contains("7 jours"), "{}", fr.text);
        assert!(fr.text.contains("jean<b>@example.org"), "{}", fr.text);
        assert!(fr.html.contains("jean&lt;b&gt;@example.org"), "{}", fr.html);
        let en = templates.invitation("en", link, "jean@example.org", 3).unwrap();
        assert!(en.text.contains("valid for 3 days"), "{}", en.text);
        assert!(!en.subject.contains("token"), "no link in the subject");
    }

    #[test]
    fn mail_text_has_no_blank_line_runs() {
        let templates = MailTemplates::new();
        for lang in LANGS {
            let mail = templates.otp_code(lang, "123456", 10, Some("App")).unwrap();
            assert!(!mail.text.contains("\n\n\n"), "{lang}:\n{}", mail.text);
            assert!(mail.text.ends_with('\n'));
        }
    }
}
