//! A real, minimal SMTP server on 127.0.0.1 for black-box tests: Habilis sends through its
//! production SMTP code path (lettre over TCP), and the test reads what arrived.
//!
//! It speaks just enough RFC 5321 for lettre without TLS: greeting, EHLO/HELO (advertising only
//! `8BITMIME` and `SMTPUTF8`: no STARTTLS, no AUTH), MAIL, RCPT, DATA with dot-unstuffing, RSET,
//! NOOP, QUIT. Several messages per connection work, as lettre's pool reuses connections. Connect
//! to it with `smtp://127.0.0.1:PORT?tls=none` ([`SmtpSink::url`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Longest command line or message the sink accepts; a runaway client gets an error, not all the RAM.
const MAX_LINE: usize = 64 * 1024;
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// One message as received: the envelope (`MAIL FROM`, `RCPT TO`) and the raw RFC 5322 text, with
/// CRLF line ends and dot-stuffing removed.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl ReceivedMail {
    fn parsed(&self) -> Option<mail_parser::Message<'_>> {
        mail_parser::MessageParser::default().parse(self.data.as_bytes())
    }

    /// The decoded `Subject` header.
    pub fn subject(&self) -> Option<String> {
        self.parsed()?.subject().map(str::to_string)
    }

    /// The value of header `name` (e.g. `From`, `Auto-Submitted`) as written, not decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let message = self.parsed()?;
        message.header_raw(name).map(|v| v.trim().to_string())
    }

    /// The first text/plain part, decoded (quoted-printable or base64, as lettre chose).
    pub fn text_body(&self) -> Option<String> {
        self.parsed()?.body_text(0).map(|t| t.into_owned())
    }

    /// The first text/html part, decoded.
    pub fn html_body(&self) -> Option<String> {
        self.parsed()?.body_html(0).map(|t| t.into_owned())
    }

    /// The one-time code in the plain-text body: the first run of exactly six digits.
    pub fn one_time_code(&self) -> Option<String> {
        extract_code(&self.text_body()?)
    }
}

/// The first run of exactly six ASCII digits in `text` (not part of a longer number).
pub fn extract_code(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut start = None;
    for i in 0..=bytes.len() {
        let digit = i < bytes.len() && bytes[i].is_ascii_digit();
        match (digit, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s == 6 {
                    return Some(text[s..i].to_string());
                }
                start = None;
            }
            _ => {}
        }
    }
    None
}

#[derive(Default)]
struct Inbox {
    mails: Mutex<Vec<ReceivedMail>>,
    arrived: Notify,
}

/// The running sink; stops (closes its listener) when dropped.
pub struct SmtpSink {
    pub addr: SocketAddr,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    /// Starts a sink that accepts every message.
    pub async fn start() -> SmtpSink {
        Self::start_with(None).await
    }

    /// Starts a sink that answers every `RCPT TO` with `reply` (e.g. `550 5.1.1 No such user`),
    /// to test how Habilis reports a relay's refusal.
    pub async fn start_rejecting(reply: &str) -> SmtpSink {
        Self::start_with(Some(reply.to_string())).await
    }

    async fn start_with(reject_rcpt: Option<String>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the SMTP sink");
        let addr = listener.local_addr().expect("the SMTP sink's address");
        let inbox = Arc::new(Inbox::default());
        let task = tokio::spawn({
            let inbox = inbox.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let inbox = inbox.clone();
                    let reject_rcpt = reject_rcpt.clone();
                    tokio::spawn(async move {
                        let _ = session(stream, &inbox, reject_rcpt.as_deref()).await;
                    });
                }
            }
        });
        SmtpSink { addr, inbox, task }
    }

    /// `smtp://127.0.0.1:PORT?tls=none`, for `mail.smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://{}?tls=none", self.addr)
    }

    /// Every message received so far (not consumed), oldest first.
    pub fn received(&self) -> Vec<ReceivedMail> {
        self.inbox.mails.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for a message to `recipient` (envelope `RCPT TO`, case-insensitive)
    /// and takes it out of the sink, so that the next call waits for the next one.
    pub async fn wait_for(&self, recipient: &str, timeout: Duration) -> Option<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before looking, so a message arriving in between is not missed.
            let arrived = self.inbox.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(mail) = self.take(recipient) {
                return Some(mail);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.take(recipient);
            }
        }
    }

    fn take(&self, recipient: &str) -> Option<ReceivedMail> {
        let mut mails = self.inbox.mails.lock().ok()?;
        let position = mails.iter().position(|m| m.to.iter().any(|to| to.eq_ignore_ascii_case(recipient)))?;
        Some(mails.remove(position))
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reply line with its CRLF.
fn reply(text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// The address inside `<…>` after `FROM:` / `TO:` (parameters such as `BODY=8BITMIME` ignored).
fn path_argument(line: &str, keyword: &str) -> Option<String> {
    let rest = line.get(..keyword.len()).filter(|p| p.eq_ignore_ascii_case(keyword)).map(|_| &line[keyword.len()..])?;
    let rest = rest.trim_start();
    let open = rest.find('<')?;
    let close = rest[open..].find('>')? + open;
    Some(rest[open + 1..close].to_string())
}

/// One SMTP session, until QUIT or the client hangs up.
async fn session(stream: TcpStream, inbox: &Inbox, reject_rcpt: Option<&str>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(&reply("220 127.0.0.1 habilis-test-sink ESMTP ready".into())).await?;

    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write.write_all(&reply("500 5.5.2 Line too long".into())).await?;
            continue;
        }
        let command = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => "250-127.0.0.1 greets you\r\n250-8BITMIME\r\n250 SMTPUTF8".to_string(),
            "HELO" => "250 127.0.0.1 greets you".to_string(),
            "MAIL" => match path_argument(command[4..].trim_start(), "FROM:") {
                Some(address) => {
                    from = Some(address);
                    to.clear();
                    "250 2.1.0 OK".to_string()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>".to_string(),
            },
            "RCPT" if from.is_none() => "503 5.5.1 MAIL first".to_string(),
            "RCPT" => match (path_argument(command[4..].trim_start(), "TO:"), reject_rcpt) {
                (Some(_), Some(rejection)) => rejection.to_string(),
                (Some(address), None) => {
                    to.push(address);
                    "250 2.1.5 OK".to_string()
                }
                (None, _) => "501 5.5.4 Syntax: RCPT TO:<address>".to_string(),
            },
            "DATA" if to.is_empty() => "503 5.5.1 RCPT first".to_string(),
            "DATA" => {
                write.write_all(&reply("354 End data with <CR><LF>.<CR><LF>".into())).await?;
                let Some(data) = read_data(&mut reader).await? else {
                    write.write_all(&reply("552 5.3.4 Message too big".into())).await?;
                    from = None;
                    to.clear();
                    continue;
                };
                let mail = ReceivedMail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data: String::from_utf8_lossy(&data).into_owned(),
                };
                if let Ok(mut mails) = inbox.mails.lock() {
                    mails.push(mail);
                }
                inbox.arrived.notify_waiters();
                "250 2.0.0 OK queued".to_string()
            }
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK".to_string()
            }
            "NOOP" => "250 2.0.0 OK".to_string(),
            "QUIT" => {
                write.write_all(&reply("221 2.0.0 Bye".into())).await?;
                return Ok(());
            }
            _ => "502 5.5.1 Command not implemented".to_string(),
        };
        write.write_all(&reply(answer)).await?;
    }
}

/// Reads a DATA payload up to the lone `.` line, undoing dot-stuffing (RFC 5321 §4.5.2). `None`
/// when the message exceeds [`MAX_MESSAGE`] (the rest is still read and discarded).
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed during DATA"));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(if too_big { None } else { Some(data) });
        }
        let content = if line.starts_with(b"..") { &line[1..] } else { &line[..] };
        if data.len() + content.len() > MAX_MESSAGE {
            too_big = true;
        }
        if !too_big {
            data.extend_from_slice(content);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_exactly_six_digits() {
        assert_eq!(extract_code("Votre code :\n    482915\n").as_deref(), Some("482915"));
        assert_eq!(extract_code("valid 10 minutes, code 012345.").as_deref(), Some("012345"));
        assert_eq!(extract_code("1234567 then 123456").as_deref(), Some("123456"));
        assert_eq!(extract_code("12345"), None);
    }

    #[test]
    fn reads_mail_and_rcpt_paths() {
        assert_eq!(path_argument("FROM:<a@b.fr> BODY=8BITMIME", "FROM:").as_deref(), Some("a@b.fr"));
        assert_eq!(path_argument("to: <c@d.fr>", "TO:").as_deref(), Some("c@d.fr"));
        assert_eq!(path_argument("FROM:<>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_argument("TO c@d.fr", "TO:"), None);
    }

    #[tokio::test]
    async fn unstuffs_dots_and_stops_at_the_lone_dot() {
        let input: &[u8] = b"Subject: x\r\n\r\n..hidden\r\n.\r\nNOOP\r\n";
        let mut reader = BufReader::new(input);
        let data = read_data(&mut reader).await.unwrap().unwrap();
        assert_eq!(data, b"Subject: x\r\n\r\n.hidden\r\n");
    }
}
