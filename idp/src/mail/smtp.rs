//! Delivery through an SMTP relay (production).
//!
//! The URL in `mail.smtp_url` says everything: `smtps://user:password@host:465` (implicit TLS, the
//! recommended form) or `smtp://user:password@host:587` (STARTTLS, required unless told otherwise).
//! Messages carry one-time codes and the connection carries the relay password, so a clear-text
//! connection (`?tls=none`) is accepted only to a loopback host: a development sink or a test.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use url::{Host, Url};
use zeroize::Zeroizing;

use super::{MailError, Mailer, OutgoingMail, build_message};

/// Longest wait for one step of the SMTP conversation (connect, each command): a login page waits
/// on it, so a dead relay must fail fast rather than hold the request.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a whole delivery, even from a relay that answers just slowly enough to never
/// trip the per-command timeout.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle pooled connections are closed after this; relays commonly drop them after about a minute.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_MAX_SIZE: u32 = 8;

const SMTPS_PORT: u16 = 465;
const SUBMISSION_PORT: u16 = 587;

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://` (default, or `?tls=required`): STARTTLS, and nothing is sent if the server does not
    /// offer it (no downgrade).
    StartTlsRequired,
    /// `smtp://…?tls=opportunistic`: STARTTLS when offered, clear text otherwise (open to an active
    /// attacker; for relays on a trusted network only).
    StartTlsOpportunistic,
    /// `smtp://…?tls=none`: clear text; loopback hosts only.
    None,
}

impl TlsMode {
    fn describe(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::StartTlsRequired => "STARTTLS required",
            TlsMode::StartTlsOpportunistic => "STARTTLS if offered",
            TlsMode::None => "no TLS, loopback only",
        }
    }
}

/// What `mail.smtp_url` says, checked. The password never appears in `Debug` or in errors.
#[derive(Clone)]
pub struct SmtpSettings {
    /// The host to connect to (an IPv6 address without brackets).
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Percent-decoded user name, if the relay needs authentication.
    pub user: Option<String>,
    password: Option<Zeroizing<String>>,
    /// The name sent with EHLO (the URL's path, as lettre reads it); the machine's host name if absent.
    pub hello_name: Option<String>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("hello_name", &self.hello_name)
            .finish()
    }
}

impl SmtpSettings {
    /// Reads `mail.smtp_url`. Every error names what to change and never echoes the URL (it may
    /// hold the password).
    pub fn from_url(url: &Url) -> Result<SmtpSettings, MailError> {
        let scheme = url.scheme();
        if !matches!(scheme, "smtp" | "smtps") {
            return Err(config_error(format!(
                "mail.smtp_url must start with smtps:// (implicit TLS, port 465) or smtp:// (STARTTLS, port 587), not `{scheme}://`"
            )));
        }
        let (host, loopback) = match url.host() {
            None => {
                return Err(config_error(
                    "mail.smtp_url has no host; write it as smtps://user:password@smtp.example.org:465".into(),
                ));
            }
            Some(Host::Ipv4(ip)) => (ip.to_string(), ip.is_loopback()),
            Some(Host::Ipv6(ip)) => (ip.to_string(), ip.is_loopback()),
            // `smtp` is not a "special" scheme for the URL parser, so even an IPv4 address arrives
            // here as an opaque host name.
            Some(Host::Domain(name)) => {
                let name = name.to_ascii_lowercase();
                if name.is_empty() {
                    return Err(config_error(
                        "mail.smtp_url has no host; write it as smtps://user:password@smtp.example.org:465".into(),
                    ));
                }
                let loopback = match name.parse::<IpAddr>() {
                    Ok(ip) => ip.is_loopback(),
                    Err(_) => name == "localhost" || name.ends_with(".localhost"),
                };
                (name, loopback)
            }
        };

        let mut tls_param = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "tls" if tls_param.is_none() => tls_param = Some(value.into_owned()),
                "tls" => return Err(config_error("mail.smtp_url gives tls=… more than once".into())),
                other => {
                    return Err(config_error(format!(
                        "mail.smtp_url has an unknown parameter `{other}`; only tls=required|opportunistic|none is understood"
                    )));
                }
            }
        }
        let tls = match (scheme, tls_param.as_deref()) {
            ("smtps", None) => TlsMode::Implicit,
            ("smtps", Some(other)) => {
                return Err(config_error(format!(
                    "mail.smtp_url: smtps:// always uses implicit TLS, so tls={other} makes no sense; remove it, or use smtp:// for STARTTLS"
                )));
            }
            (_, None | Some("required")) => TlsMode::StartTlsRequired,
            (_, Some("opportunistic")) => TlsMode::StartTlsOpportunistic,
            (_, Some("none")) if loopback => TlsMode::None,
            (_, Some("none")) => {
                return Err(config_error(format!(
                    "mail.smtp_url: tls=none would send one-time codes (and the SMTP password) in clear text to `{host}`; it is allowed only for a loopback host (127.0.0.1, ::1, localhost). Use smtps://{host}:465 or smtp://{host}:587 (STARTTLS)"
                )));
            }
            (_, Some(other)) => {
                return Err(config_error(format!(
                    "mail.smtp_url: unknown tls={other}; use tls=required (the default for smtp://), tls=opportunistic, or tls=none (loopback hosts only)"
                )));
            }
        };
        let port = url.port().unwrap_or(if tls == TlsMode::Implicit { SMTPS_PORT } else { SUBMISSION_PORT });

        let user = (!url.username().is_empty()).then(|| decode(url.username(), "user name")).transpose()?;
        let password = url.password().map(|p| decode(p, "password").map(Zeroizing::new)).transpose()?;
        match (&user, &password) {
            (Some(_), None) => {
                return Err(config_error(
                    "mail.smtp_url has a user name but no password; write smtps://user:password@host (percent-encode special characters)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "mail.smtp_url has a password but no user name; write smtps://user:password@host".into(),
                ));
            }
            _ => {}
        }

        let path = url.path().trim_matches('/');
        let hello_name = (!path.is_empty()).then(|| path.to_string());
        Ok(SmtpSettings { host, port, tls, user, password, hello_name })
    }

    /// `smtps://user@host:465 (implicit TLS)`: for the start-up banner; no password.
    pub fn describe(&self) -> String {
        let scheme = if self.tls == TlsMode::Implicit { "smtps" } else { "smtp" };
        let user = self.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("SMTP {scheme}://{user}{host}:{} ({})", self.port, self.tls.describe())
    }

    fn credentials(&self) -> Option<Credentials> {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.to_string())),
            _ => None,
        }
    }

    /// Removes the password from a text that came from elsewhere (a relay's reply, a library error)
    /// before it reaches a log line or an error page.
    fn scrub(&self, text: String) -> String {
        match &self.password {
            Some(password) if !password.is_empty() => text.replace(password.as_str(), "***"),
            _ => text,
        }
    }
}

fn config_error(message: String) -> MailError {
    MailError::Config(message)
}

/// Percent-decodes a user name or password from the URL. The error never shows the value.
fn decode(raw: &str, what: &str) -> Result<String, MailError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| config_error(format!("the {what} in mail.smtp_url is not valid UTF-8 once percent-decoded")))
}

/// Sends through an SMTP relay with a pool of connections, so that a burst of logins does not pay
/// a TCP + TLS handshake per message.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    settings: SmtpSettings,
}

impl SmtpMailer {
    /// Prepares the transport; connects only when the first message is sent. Must run inside a
    /// Tokio runtime (the pool spawns its idle-connection reaper).
    pub fn new(settings: SmtpSettings, from: Mailbox) -> Result<SmtpMailer, MailError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(config_error("the SMTP mailer must be created inside the Tokio runtime".into()));
        }
        let tls_parameters = || {
            TlsParameters::new(settings.host.clone())
                .map_err(|e| config_error(format!("cannot prepare TLS for the SMTP host `{}`: {e}", settings.host)))
        };
        let tls = match settings.tls {
            TlsMode::Implicit => Tls::Wrapper(tls_parameters()?),
            TlsMode::StartTlsRequired => Tls::Required(tls_parameters()?),
            TlsMode::StartTlsOpportunistic => Tls::Opportunistic(tls_parameters()?),
            TlsMode::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(COMMAND_TIMEOUT))
            .pool_config(PoolConfig::new().max_size(POOL_MAX_SIZE).idle_timeout(POOL_IDLE_TIMEOUT));
        if let Some(credentials) = settings.credentials() {
            builder = builder.credentials(credentials);
        }
        if let Some(name) = &settings.hello_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        Ok(SmtpMailer { transport: builder.build(), from, settings })
    }

    /// Turns a lettre error into one that says what to check.
    fn explain(&self, error: lettre::transport::smtp::Error) -> MailError {
        let server = format!("{}:{}", self.settings.host, self.settings.port);
        let detail = self.settings.scrub(error.to_string());
        let code = error.status().map(|c| c.to_string());
        let (hint, transient) = if error.is_timeout() {
            (
                format!(
                    "the SMTP server {server} did not answer in time; check that it is reachable from this machine (firewall) and that the port matches the TLS mode (465 = smtps://, 587 = smtp:// with STARTTLS)"
                ),
                true,
            )
        } else if error.is_tls() {
            (
                format!(
                    "TLS with the SMTP server {server} failed; check the scheme (smtps:// for port 465, smtp:// for STARTTLS on 587) and that the server's certificate is valid for `{}`",
                    self.settings.host
                ),
                false,
            )
        } else if matches!(code.as_deref(), Some("530" | "534" | "535" | "538")) {
            (
                format!(
                    "the SMTP server {server} refused the credentials; check the user name and password in mail.smtp_url (percent-encode special characters)"
                ),
                false,
            )
        } else if error.is_permanent() {
            (
                format!(
                    "the SMTP server {server} rejected the message; check that mail.from is allowed to send through this relay and that the recipient address exists"
                ),
                false,
            )
        } else if error.is_transient() {
            (format!("the SMTP server {server} is temporarily refusing mail; it may work again shortly"), true)
        } else if error.is_response() || error.is_client() {
            (
                format!(
                    "the SMTP conversation with {server} failed; check that the host and port are those of an SMTP server and that the TLS mode matches"
                ),
                false,
            )
        } else {
            (
                format!(
                    "could not talk to the SMTP server {server}; check the host, the port and that the server is running"
                ),
                true,
            )
        };
        MailError::Smtp { message: format!("{hint} ({detail})"), transient }
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: &OutgoingMail) -> Result<(), MailError> {
        let email = build_message(&self.from, message)?;
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(email)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(error)) => Err(self.explain(error)),
            Err(_elapsed) => Err(MailError::Smtp {
                message: format!(
                    "the SMTP server {}:{} took more than {} s to accept the message; check its health and the network",
                    self.settings.host,
                    self.settings.port,
                    SEND_TIMEOUT.as_secs()
                ),
                transient: true,
            }),
        }
    }

    fn describe(&self) -> String {
        self.settings.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<SmtpSettings, MailError> {
        SmtpSettings::from_url(&Url::parse(url).unwrap())
    }

    fn err(url: &str) -> String {
        parse(url).unwrap_err().to_string()
    }

    #[test]
    fn mail_smtps_is_implicit_tls_on_465() {
        let s = parse("smtps://smtp.example.org").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("smtp.example.org", 465, TlsMode::Implicit));
        assert!(s.user.is_none() && s.credentials().is_none());
    }

    #[test]
    fn mail_smtp_defaults_to_required_starttls_on_587() {
        let s = parse("smtp://smtp.example.org").unwrap();
        assert_eq!((s.port, s.tls), (587, TlsMode::StartTlsRequired));
        assert_eq!(parse("smtp://smtp.example.org:2525?tls=required").unwrap().port, 2525);
        assert_eq!(parse("smtp://smtp.example.org?tls=opportunistic").unwrap().tls, TlsMode::StartTlsOpportunistic);
    }

    #[test]
    fn mail_credentials_are_percent_decoded() {
        let s = parse("smtps://no-reply%40example.org:p%40ss%3Aw%2Fo%20rd%C3%A9@smtp.example.org:465/mx.example.org")
            .unwrap();
        assert_eq!(s.user.as_deref(), Some("no-reply@example.org"));
        assert_eq!(s.password.as_deref().map(String::as_str), Some("p@ss:w/o rdé"));
        assert_eq!(s.hello_name.as_deref(), Some("mx.example.org"));
        assert!(s.credentials().is_some());
    }

    #[test]
    fn mail_password_never_shown() {
        let s = parse("smtps://user:s3cr3t-Pw@smtp.example.org").unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t-Pw"));
        assert!(!s.describe().contains("s3cr3t-Pw"));
        assert_eq!(s.describe(), "SMTP smtps://user@smtp.example.org:465 (implicit TLS)");
        assert_eq!(s.scrub("535 bad password s3cr3t-Pw".into()), "535 bad password ***");
        for bad in [
            "smtp://user:s3cr3t-Pw@smtp.example.org?tls=none",
            "smtp://user:s3cr3t-Pw@smtp.example.org?tls=bogus",
            "smtp://user:s3cr3t-Pw@smtp.example.org?foo=bar",
            "smtps://user:s3cr3t-Pw@smtp.example.org?tls=none",
            "smtp://user:%FF%FE@smtp.example.org",
            "smtp://:s3cr3t-Pw@smtp.example.org",
            "imap://user:s3cr3t-Pw@smtp.example.org",
        ] {
            let message = err(bad);
            assert!(!message.contains("s3cr3t-Pw"), "{bad}: {message}");
            assert!(!message.contains("%FF"), "{bad}: {message}");
        }
    }

    #[test]
    fn mail_clear_text_only_to_loopback() {
        assert_eq!(parse("smtp://127.0.0.1:2525?tls=none").unwrap().tls, TlsMode::None);
        assert_eq!(parse("smtp://127.3.4.5:2525?tls=none").unwrap().tls, TlsMode::None);
        assert_eq!(parse("smtp://[::1]:2525?tls=none").unwrap().host, "::1");
        assert_eq!(parse("smtp://LocalHost:1025?tls=none").unwrap().tls, TlsMode::None);
        let message = err("smtp://mail.example.org:25?tls=none");
        assert!(message.contains("loopback") && message.contains("mail.example.org"), "{message}");
        assert!(err("smtp://10.0.0.1?tls=none").contains("loopback"));
        assert!(err("smtp://[2001:db8::1]?tls=none").contains("loopback"));
        assert!(err("smtp://localhost.example.org?tls=none").contains("loopback"));
    }

    #[test]
    fn mail_bad_urls_say_what_to_write() {
        assert!(err("http://smtp.example.org").contains("smtps://"));
        assert!(err("smtp:relay").contains("no host"));
        assert!(err("smtp://smtp.example.org?tls=maybe").contains("tls=required"));
        assert!(err("smtp://smtp.example.org?tls=required&tls=none").contains("more than once"));
        assert!(err("smtp://user@smtp.example.org").contains("no password"));
        assert!(err("smtps://smtp.example.org?tls=opportunistic").contains("implicit TLS"));
    }

    #[tokio::test]
    async fn mail_smtp_mailer_builds_for_every_tls_mode() {
        let from: Mailbox = "Habilis <no-reply@example.org>".parse().unwrap();
        for url in [
            "smtps://u:p@smtp.example.org",
            "smtp://smtp.example.org",
            "smtp://smtp.example.org?tls=opportunistic",
            "smtp://127.0.0.1:2525?tls=none",
            "smtp://[::1]:2525?tls=none",
        ] {
            let mailer = SmtpMailer::new(parse(url).unwrap(), from.clone()).unwrap();
            assert!(mailer.describe().starts_with("SMTP "), "{}", mailer.describe());
            assert!(!mailer.describe().contains(":p@"));
        }
    }

    #[test]
    fn mail_smtp_mailer_outside_a_runtime_is_an_error_not_a_panic() {
        let from: Mailbox = "no-reply@example.org".parse().unwrap();
        let result = SmtpMailer::new(parse("smtps://smtp.example.org").unwrap(), from);
        assert!(matches!(result, Err(MailError::Config(_))));
    }
}
