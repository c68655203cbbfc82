//! Outgoing mail: one small seam ([`Mailer`]) chosen once at start-up by [`from_config`].
//!
//! - No `mail.smtp_url` (the embedded mode): [`OutboxMailer`] writes each message as an `.eml` file
//!   into [`Config::outbox_dir`], so a developer can run Habilis with nothing else installed and
//!   still read the one-time codes it sends.
//! - `mail.smtp_url` set (production): [`SmtpMailer`] hands messages to an SMTP relay over TLS.
//!
//! Messages carry one-time codes, so neither implementation ever logs a body, and the `Debug` form
//! of [`OutgoingMail`] hides it. Bodies come from [`MailTemplates`] (the theme's `mail/` folder).

mod memory;
mod outbox;
mod smtp;
mod templates;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::config::Config;

pub use memory::MemoryMailer;
pub use outbox::OutboxMailer;
pub use smtp::{SmtpMailer, SmtpSettings, TlsMode};
pub use templates::{KINDS, LANGS, MailTemplates, RenderedMail};

/// Sends one message. Implementations are shared by every request handler, hence `Send + Sync`.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Delivers `message` (to the relay, or to the outbox folder). An `Ok` means the message left
    /// Habilis' hands, not that it reached the inbox.
    async fn send(&self, message: &OutgoingMail) -> Result<(), MailError>;

    /// One line for the start-up banner and diagnostics: where mail goes. Never contains a secret.
    fn describe(&self) -> String;
}

/// The mailer held in the application state.
pub type SharedMailer = Arc<dyn Mailer>;

/// One message to one person: the rendered subject and both bodies (clients show the HTML part,
/// screen readers and text-only clients the plain one).
#[derive(Clone)]
pub struct OutgoingMail {
    /// The recipient's address (`person@example.org`).
    pub to: String,
    /// The recipient's display name, if known.
    pub to_name: Option<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl OutgoingMail {
    /// A message to `to` with the subject and bodies of a rendered template.
    pub fn new(to: impl Into<String>, to_name: Option<String>, rendered: RenderedMail) -> OutgoingMail {
        OutgoingMail { to: to.into(), to_name, subject: rendered.subject, text: rendered.text, html: rendered.html }
    }
}

/// The bodies hold one-time codes: a stray `{:?}` in a log line must not print them.
impl fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("subject", &self.subject)
            .field("text", &format_args!("({} bytes)", self.text.len()))
            .field("html", &format_args!("({} bytes)", self.html.len()))
            .finish_non_exhaustive()
    }
}

/// Why mail could not be set up or sent. Messages say what to check and never contain the SMTP
/// password nor a message body.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// `mail.*` settings that cannot work; reported at start-up.
    #[error("mail configuration: {0}")]
    Config(String),
    /// The recipient address is not an email address (nothing was sent).
    #[error("the recipient address is not a valid email address")]
    InvalidRecipient,
    /// The message could not be assembled (a bug rather than an operational problem).
    #[error("could not build the message: {0}")]
    Build(String),
    /// The outbox folder could not be written.
    #[error(
        "could not write to the mail outbox {path}: {source}; check that the folder is writable by the user running habilis"
    )]
    Outbox { path: std::path::PathBuf, source: std::io::Error },
    /// The SMTP relay could not be reached or refused the message. `transient` is true when trying
    /// again later may work (timeouts, 4xx replies, connection problems).
    #[error("sending mail failed: {message}")]
    Smtp { message: String, transient: bool },
    /// A mail template is missing or failed to render (a bug in the theme).
    #[error("mail template {name}: {reason}")]
    Template { name: String, reason: String },
}

impl MailError {
    /// Whether the same message may go through if sent again later.
    pub fn is_transient(&self) -> bool {
        match self {
            MailError::Smtp { transient, .. } => *transient,
            MailError::Outbox { .. } => true,
            _ => false,
        }
    }
}

/// Builds the mailer described by `config.mail`. Fails on settings that cannot work (bad URL, a
/// clear-text connection to a remote host, an unusable outbox folder) so that `habilis serve`
/// stops at start-up rather than at the first login.
///
/// Call it inside a Tokio runtime: the pooled SMTP transport starts a task that closes idle
/// connections.
pub fn from_config(config: &Config) -> Result<SharedMailer, MailError> {
    let from = parse_from(&config.mail.from)?;
    match &config.mail.smtp_url {
        None => Ok(Arc::new(OutboxMailer::new(config.outbox_dir(), from)?)),
        Some(url) => {
            let settings = SmtpSettings::from_url(url)?;
            if settings.tls == TlsMode::StartTlsOpportunistic {
                tracing::warn!(
                    host = %settings.host,
                    "mail.smtp_url uses tls=opportunistic: an attacker on the network can strip STARTTLS and read one-time codes; prefer smtps:// or the default tls=required"
                );
            }
            Ok(Arc::new(SmtpMailer::new(settings, from)?))
        }
    }
}

/// `mail.from` as a mailbox (`Habilis <no-reply@example.org>` or a bare address).
fn parse_from(from: &str) -> Result<Mailbox, MailError> {
    from.parse::<Mailbox>().map_err(|e| {
        MailError::Config(format!(
            "mail.from `{from}` is not a valid sender ({e}); write it as `Habilis <no-reply@example.org>`"
        ))
    })
}

/// The RFC 5322 message for `mail`: multipart/alternative (plain text first, then HTML, so that
/// clients prefer the HTML), a Message-ID in the sender's domain (relays and spam filters expect
/// one that matches the From domain) and `Auto-Submitted: auto-generated` (RFC 3834) so that
/// vacation responders do not reply to a no-reply address.
pub(crate) fn build_message(from: &Mailbox, mail: &OutgoingMail) -> Result<Message, MailError> {
    let address = mail.to.trim().parse().map_err(|_| MailError::InvalidRecipient)?;
    let to = Mailbox::new(mail.to_name.clone().filter(|n| !n.trim().is_empty()), address);
    let message_id = format!("<{}@{}>", uuid::Uuid::new_v4().simple(), from.email.domain());
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(message_id))
        .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("Auto-Submitted"), "auto-generated".into()))
        .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
        .map_err(|e| MailError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OutgoingMail {
        OutgoingMail {
            to: "alice@example.org".into(),
            to_name: Some("Alice Martin".into()),
            subject: "Votre code".into(),
            text: "code 123456".into(),
            html: "<p>code <b>123456</b></p>".into(),
        }
    }

    #[test]
    fn mail_debug_hides_the_bodies() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("123456"), "{shown}");
        assert!(!shown.contains("alice@example.org"), "{shown}");
    }

    #[test]
    fn mail_message_is_multipart_alternative_with_sender_domain_message_id() {
        let from = parse_from("Habilis <no-reply@habilis.example>").unwrap();
        let raw = String::from_utf8(build_message(&from, &sample()).unwrap().formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain"), "{raw}");
        assert!(raw.contains("text/html"), "{raw}");
        assert!(raw.contains("@habilis.example>"), "{raw}");
        assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
        assert!(raw.contains("From: Habilis <no-reply@habilis.example>"), "{raw}");
    }

    #[test]
    fn mail_bad_recipient_and_sender_are_refused() {
        let from = parse_from("no-reply@habilis.example").unwrap();
        let mut mail = sample();
        mail.to = "not an address".into();
        assert!(matches!(build_message(&from, &mail), Err(MailError::InvalidRecipient)));
        let err = parse_from("Habilis").unwrap_err().to_string();
        assert!(err.contains("mail.from"), "{err}");
    }

    #[test]
    fn mail_header_injection_in_subject_is_encoded() {
        let from = parse_from("no-reply@habilis.example").unwrap();
        let mut mail = sample();
        mail.subject = "Hello\r\nBcc: evil@example.org".into();
        let raw = String::from_utf8(build_message(&from, &mail).unwrap().formatted()).unwrap();
        assert!(!raw.contains("\r\nBcc:"), "{raw}");
    }
}
