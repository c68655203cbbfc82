//! A mailer that keeps messages in memory, for in-process tests of the features that send mail
//! (they read the code from here instead of running an SMTP sink or scanning a folder).

use std::sync::Mutex;

use async_trait::async_trait;

use super::{MailError, Mailer, OutgoingMail};

#[derive(Default)]
pub struct MemoryMailer {
    sent: Mutex<Vec<OutgoingMail>>,
}

impl MemoryMailer {
    pub fn new() -> MemoryMailer {
        MemoryMailer::default()
    }

    /// Every message sent so far, oldest first.
    pub fn sent(&self) -> Vec<OutgoingMail> {
        self.sent.lock().map(|sent| sent.clone()).unwrap_or_default()
    }

    /// The latest message sent to `to` (compared case-insensitively).
    pub fn last_to(&self, to: &str) -> Option<OutgoingMail> {
        self.sent().into_iter().rev().find(|m| m.to.eq_ignore_ascii_case(to))
    }
}

#[async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, message: &OutgoingMail) -> Result<(), MailError> {
        // Refuse what a real mailer would refuse, so tests see the same errors.
        if message.to.trim().parse::<lettre::Address>().is_err() {
            return Err(MailError::InvalidRecipient);
        }
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(message.clone());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "memory (tests only)".into()
    }
}
