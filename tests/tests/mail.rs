//! Outgoing mail through the real code paths: `mail::from_config` picks the mailer from the
//! configuration, the SMTP mailer talks to a real (minimal) SMTP server over TCP, and the outbox
//! mailer writes files a mail client can open.

use std::time::Duration;

use habilis_e2e::smtp_sink::SmtpSink;
use habilis_idp::config::Config;
use habilis_idp::mail::{self, MailError, MailTemplates, OutgoingMail};

const WAIT: Duration = Duration::from_secs(10);
const FROM: &str = "Habilis <no-reply@habilis.test>";

fn config(data_dir: &std::path::Path, smtp_url: Option<&str>) -> Config {
    let mut config = Config { data_dir: data_dir.to_path_buf(), ..Config::default() };
    config.mail.from = FROM.into();
    config.mail.smtp_url = smtp_url.map(|u| url::Url::parse(u).expect("a URL"));
    config
}

fn otp_mail(to: &str, lang: &str, code: &str) -> OutgoingMail {
    let rendered = MailTemplates::new().otp_code(lang, code, 10, Some("Portail <Santé>")).expect("rendered");
    OutgoingMail::new(to, Some("Dr Camille Durand".into()), rendered)
}

#[tokio::test]
async fn smtp_delivers_the_otp_code_in_french_and_english() {
    let sink = SmtpSink::start().await;
    let data = tempfile::tempdir().unwrap();
    let config = config(data.path(), Some(&sink.url()));
    let mailer = mail::from_config(&config).expect("an SMTP mailer");
    assert!(mailer.describe().contains(&sink.addr.port().to_string()), "{}", mailer.describe());

    let cases = [
        ("camille@example.fr", "fr", "482915", "Votre code de connexion Habilis", "Ne communiquez jamais ce code"),
        ("camille.en@example.org", "en", "073160", "Your Habilis sign-in code", "Never share this code"),
    ];
    for (to, lang, code, subject, warning) in cases {
        mailer.send(&otp_mail(to, lang, code)).await.unwrap_or_else(|e| panic!("{lang}: {e}"));
        let received = sink.wait_for(to, WAIT).await.unwrap_or_else(|| panic!("no {lang} mail to {to}"));
        assert_eq!(received.from, "no-reply@habilis.test");
        assert_eq!(received.to, vec![to.to_string()]);
        assert_eq!(received.subject().as_deref(), Some(subject));
        assert_eq!(received.one_time_code().as_deref(), Some(code), "{}", received.data);
        let text = received.text_body().expect("a text part");
        assert!(text.contains(warning), "{text}");
        assert!(text.contains("Portail <Santé>"), "the text part is not HTML-escaped: {text}");
        let html = received.html_body().expect("an HTML part");
        assert!(html.contains(code), "{html}");
        assert!(html.contains("Portail &lt;Santé&gt;"), "the HTML part is escaped: {html}");
        assert!(received.data.contains("multipart/alternative"));
        assert_eq!(received.header("Auto-Submitted").as_deref(), Some("auto-generated"));
        let to_header = received.header("To").expect("a To header");
        assert!(to_header.contains(to), "{to_header}");
    }
    assert!(!config.outbox_dir().exists(), "with SMTP configured nothing goes to the outbox");
}

#[tokio::test]
async fn smtp_pooled_connection_carries_several_messages() {
    let sink = SmtpSink::start().await;
    let data = tempfile::tempdir().unwrap();
    let mailer = mail::from_config(&config(data.path(), Some(&sink.url()))).unwrap();
    for i in 0..3 {
        let to = format!("user{i}@example.fr");
        mailer.send(&otp_mail(&to, "fr", &format!("10000{i}"))).await.unwrap();
    }
    for i in 0..3 {
        let received = sink.wait_for(&format!("USER{i}@example.fr"), WAIT).await.expect("delivered");
        assert_eq!(received.one_time_code(), Some(format!("10000{i}")));
    }
    assert!(sink.received().is_empty(), "wait_for takes the message out of the sink");
}

#[tokio::test]
async fn smtp_refusal_is_reported_with_what_to_check() {
    let sink = SmtpSink::start_rejecting("550 5.1.1 No such user here").await;
    let data = tempfile::tempdir().unwrap();
    let mailer = mail::from_config(&config(data.path(), Some(&sink.url()))).unwrap();
    let error = mailer.send(&otp_mail("nobody@example.fr", "fr", "123456")).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, MailError::Smtp { transient: false, .. }), "{error:?}");
    assert!(message.contains("rejected the message") && message.contains("550"), "{message}");
    assert!(!message.contains("123456"), "{message}");
}

#[tokio::test]
async fn smtp_unreachable_server_is_transient_and_hides_the_password() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let data = tempfile::tempdir().unwrap();
    let url = format!("smtp://relay-user:Sup3r%2Fs3cret@127.0.0.1:{port}?tls=none");
    let mailer = mail::from_config(&config(data.path(), Some(&url))).unwrap();
    assert!(!mailer.describe().contains("Sup3r"), "{}", mailer.describe());
    let error = mailer.send(&otp_mail("camille@example.fr", "fr", "123456")).await.unwrap_err();
    let message = error.to_string();
    assert!(error.is_transient(), "{error:?}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("Sup3r") && !message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn outbox_writes_one_parseable_eml_and_nothing_else() {
    let data = tempfile::tempdir().unwrap();
    let config = config(data.path(), None);
    let mailer = mail::from_config(&config).expect("an outbox mailer");
    assert!(mailer.describe().contains("outbox"), "{}", mailer.describe());
    mailer.send(&otp_mail("camille@example.fr", "fr", "590417")).await.unwrap();

    let outbox = config.outbox_dir();
    let entries: Vec<_> = std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "exactly one file, no temporary left behind: {entries:?}");
    let top: Vec<_> = std::fs::read_dir(data.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(top, vec![std::ffi::OsString::from("outbox")], "the outbox mailer writes nothing else");
    let name = entries[0].file_name().unwrap().to_string_lossy().into_owned();
    let (seconds, rest) = name.split_once('-').expect("<unix-time>-<uuid>.eml");
    assert!(seconds.parse::<u64>().is_ok(), "{name}");
    let uuid = rest.strip_suffix(".eml").expect(".eml");
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{name}");

    let raw = std::fs::read(&entries[0]).unwrap();
    let message = mail_parser::MessageParser::default().parse(&raw).expect("an RFC 5322 message");
    assert_eq!(message.subject(), Some("Votre code de connexion Habilis"));
    let from = message.from().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_string);
    assert_eq!(from.as_deref(), Some("no-reply@habilis.test"));
    let to = message.to().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_string);
    assert_eq!(to.as_deref(), Some("camille@example.fr"));
    let text = message.body_text(0).expect("a text part");
    assert_eq!(habilis_e2e::smtp_sink::extract_code(&text).as_deref(), Some("590417"));
    assert!(message.body_html(0).expect("an HTML part").contains("590417"));
    assert!(message.date().is_some() && message.message_id().is_some());
}

#[tokio::test]
async fn bad_smtp_urls_are_refused_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let cases = [
        ("http://user:Hunter2pw@smtp.example.org", "smtps://"),
        ("smtp://user:Hunter2pw@smtp.example.org:25?tls=none", "loopback"),
        ("smtp://user:Hunter2pw@10.1.2.3:25?tls=none", "loopback"),
        ("smtp://user:Hunter2pw@smtp.example.org?tls=sometimes", "tls=required"),
        ("smtps://user:Hunter2pw@smtp.example.org?tls=none", "implicit TLS"),
    ];
    for (url, expected) in cases {
        let error = match mail::from_config(&config(data.path(), Some(url))) {
            Ok(mailer) => panic!("{url} was accepted: {}", mailer.describe()),
            Err(e) => e,
        };
        let message = error.to_string();
        assert!(matches!(error, MailError::Config(_)), "{url}: {error:?}");
        assert!(message.contains("mail.smtp_url") && message.contains(expected), "{url}: {message}");
        assert!(!message.contains("Hunter2pw"), "{url}: {message}");
    }
    let mut bad_from = config(data.path(), None);
    bad_from.mail.from = "Habilis".into();
    let message = mail::from_config(&bad_from).err().expect("refused").to_string();
    assert!(message.contains("mail.from"), "{message}");
}
