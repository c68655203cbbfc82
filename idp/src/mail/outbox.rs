//! Delivery into a folder (the embedded mode): each message becomes an RFC 5322 `.eml` file that any
//! mail client opens, so Habilis runs with no mail server and a developer can still read the codes.
//!
//! The files hold one-time codes: the folder is created private (0700), each file is private
//! (0600), and a file appears only complete (written under a temporary name, then renamed), so a
//! tool watching the folder never reads half a message.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use lettre::message::Mailbox;

use super::{MailError, Mailer, OutgoingMail, build_message};

pub struct OutboxMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl OutboxMailer {
    /// Creates the folder now (0700, with its parents) so that a folder Habilis cannot write is
    /// reported at start-up. An existing folder keeps its permissions (it may be shared, e.g.
    /// `/tmp`); the files in it are private anyway.
    pub fn new(dir: PathBuf, from: Mailbox) -> Result<OutboxMailer, MailError> {
        create_private_dir(&dir).map_err(|source| MailError::Outbox { path: dir.clone(), source })?;
        Ok(OutboxMailer { dir, from })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `bytes` to `dir/name` atomically: a hidden temporary file (created exclusively, 0600),
/// flushed to disk, then renamed into place.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    // The folder may have been removed while the server runs (a developer cleaning up).
    create_private_dir(dir)?;
    let final_path = dir.join(name);
    let temp_path = dir.join(format!(".{name}.tmp"));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&temp_path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp_path, &final_path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&temp_path);
        return Err(e);
    }
    Ok(final_path)
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, message: &OutgoingMail) -> Result<(), MailError> {
        let bytes = build_message(&self.from, message)?.formatted();
        // Seconds first so that `ls` lists messages in order; the UUID keeps names unique.
        let name = format!("{}-{}.eml", crate::unix_now(), uuid::Uuid::new_v4());
        let dir = self.dir.clone();
        let path = tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes))
            .await
            .map_err(|e| MailError::Outbox { path: self.dir.clone(), source: std::io::Error::other(e) })?
            .map_err(|source| MailError::Outbox { path: self.dir.clone(), source })?;
        // The path only: the body holds a one-time code.
        tracing::info!(path = %path.display(), "mail written to the outbox");
        Ok(())
    }

    fn describe(&self) -> String {
        format!("outbox folder {} (no SMTP server configured)", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail() -> OutgoingMail {
        OutgoingMail {
            to: "bob@example.org".into(),
            to_name: None,
            subject: "Code".into(),
            text: "Votre code : 654321".into(),
            html: "<p>654321</p>".into(),
        }
    }

    #[tokio::test]
    async fn mail_outbox_writes_one_private_eml_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data").join("outbox");
        let mailer = OutboxMailer::new(dir.clone(), "Habilis <no-reply@example.org>".parse().unwrap()).unwrap();
        mailer.send(&mail()).await.unwrap();
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let name = entries[0].file_name().unwrap().to_string_lossy().into_owned();
        let (time, rest) = name.split_once('-').unwrap();
        assert!(time.parse::<i64>().is_ok() && rest.ends_with(".eml"), "{name}");
        let raw = fs::read_to_string(&entries[0]).unwrap();
        assert!(raw.contains("To: bob@example.org"), "{raw}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
            assert_eq!(fs::metadata(&entries[0]).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(mailer.describe().contains(&dir.display().to_string()));
    }

    #[tokio::test]
    async fn mail_outbox_recreates_a_removed_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let mailer = OutboxMailer::new(dir.clone(), "no-reply@example.org".parse().unwrap()).unwrap();
        fs::remove_dir(&dir).unwrap();
        mailer.send(&mail()).await.unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn mail_outbox_unwritable_folder_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = OutboxMailer::new(file.join("outbox"), "no-reply@example.org".parse().unwrap()).err().unwrap();
        assert!(err.to_string().contains("writable"), "{err}");
    }
}
