//! The master key: AES-256-GCM sealing of secrets stored in the database.
//!
//! Sealed format (version 1): `0x01 || nonce (12 random bytes) || ciphertext || tag (16 bytes)`.
//! The leading version byte lets a later format (another AEAD, a key id for master-key rotation)
//! coexist with records written today. The AAD binds a sealed value to its context (a signing key's
//! `kid`, a credential id …) so that a sealed blob copied into another row does not open there.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rand::RngCore;
use zeroize::Zeroizing;

use super::KeyError;
use crate::config::Config;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Operators paste keys from many tools: accept padded or unpadded, standard or URL-safe base64.
const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// 32 secret bytes, wiped from memory on drop. Deliberately neither `Clone` nor printable: share it
/// behind an `Arc` (see [`super::KeyManager::master_key`]).
pub struct MasterKey {
    key: Zeroizing<[u8; KEY_LEN]>,
}

/// Where the master key came from, so that start-up can say it (and warn when it was just created:
/// that file must now be backed up with the database).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `keys.master_key` or `HABILIS_KEYS__MASTER_KEY`.
    Config,
    /// An existing file.
    File(PathBuf),
    /// Generated now and written to this file (mode 0600).
    Generated(PathBuf),
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parses base64 (standard alphabet, padding optional; URL-safe also accepted) of exactly 32
    /// bytes. Surrounding whitespace is ignored so that files ending with a newline work. The error
    /// never repeats the value.
    pub fn from_base64(text: &str) -> Result<MasterKey, KeyError> {
        let text = text.trim();
        let decoded = Zeroizing::new(
            STANDARD_ANY_PADDING.decode(text).or_else(|_| URL_SAFE_ANY_PADDING.decode(text)).map_err(|_| {
                KeyError::InvalidMasterKey(
                    "not valid base64; expected the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)".into(),
                )
            })?,
        );
        if decoded.len() != KEY_LEN {
            return Err(KeyError::InvalidMasterKey(format!(
                "decodes to {} bytes; expected the base64 of exactly 32 random bytes (e.g. `openssl rand -base64 32`)",
                decoded.len()
            )));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&decoded);
        Ok(MasterKey { key })
    }

    /// A fresh random key from the operating system's CSPRNG (via `rand`'s thread RNG).
    pub fn generate() -> MasterKey {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        MasterKey { key }
    }

    /// The key as base64 text (standard alphabet, padded): the format of the key file and of
    /// `HABILIS_KEYS__MASTER_KEY`. Wrapped in `Zeroizing` so callers do not leave copies around.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.key.as_ref()))
    }

    fn cipher(&self) -> Result<Aes256Gcm, KeyError> {
        // Built per call (a key expansion costs well under a microsecond) so that the expanded key
        // schedule does not live in memory next to the key: aes-gcm zeroizes it only with a feature
        // that is not enabled in this tree.
        Aes256Gcm::new_from_slice(self.key.as_ref()).map_err(|_| KeyError::Crypto("AES-256 key of wrong length".into()))
    }

    /// Encrypts and authenticates `plaintext`, binding it to `aad`. Output: version byte 1, random
    /// 12-byte nonce, ciphertext and tag. Random nonces are safe far beyond the number of secrets a
    /// deployment will ever seal under one key (NIST's limit is 2^32 messages).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce_bytes);
        let nonce = Nonce::from(nonce_bytes);
        let ciphertext = self
            .cipher()?
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .map_err(|_| KeyError::Crypto("AES-GCM encryption failed".into()))?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Reverses [`MasterKey::seal`]. Fails — without saying which — on an unknown version, a wrong
    /// key, a wrong `aad` or any modification of the sealed bytes.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(KeyError::Unseal);
        }
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
        let nonce = Nonce::from(nonce_bytes);
        self.cipher()?
            .decrypt(&nonce, Payload { msg: &sealed[1 + NONCE_LEN..], aad })
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Unseal)
    }

    /// Finds the master key for this deployment:
    ///
    /// 1. `keys.master_key` (or `HABILIS_KEYS__MASTER_KEY`) when set;
    /// 2. otherwise the file [`Config::master_key_file`] (base64 text);
    /// 3. if that file does not exist: when `store_has_keys`, refuse — generating a new key would
    ///    silently orphan every sealed secret in the database, which is worse than not starting;
    ///    otherwise generate a key and create the file (and its directory) with mode 0600.
    ///
    /// `store_has_keys` is whether the database already holds sealed signing keys.
    pub fn load_or_create(config: &Config, store_has_keys: bool) -> Result<(MasterKey, MasterKeySource), KeyError> {
        if let Some(inline) = &config.keys.master_key {
            return Ok((MasterKey::from_base64(inline)?, MasterKeySource::Config));
        }
        let path = config.master_key_file();
        match read_key_file(&path) {
            Ok(key) => Ok((key, MasterKeySource::File(path))),
            Err(KeyError::MasterKeyFile { source, .. }) if source.kind() == ErrorKind::NotFound => {
                if store_has_keys {
                    return Err(KeyError::MasterKeyMissing { path });
                }
                create_key_file(&path)
            }
            Err(e) => Err(e),
        }
    }
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::MasterKeyFile { path: path.to_path_buf(), source }
}

fn read_key_file(path: &Path) -> Result<MasterKey, KeyError> {
    let metadata = std::fs::metadata(path).map_err(file_error(path))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", metadata.permissions().mode() & 0o777),
            "the master key file is accessible by group or others; restrict it with `chmod 600`"
        );
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(file_error(path))?);
    MasterKey::from_base64(&text).map_err(|e| match e {
        KeyError::InvalidMasterKey(reason) => KeyError::InvalidMasterKey(format!("in {}: {reason}", path.display())),
        other => other,
    })
}

fn create_key_file(path: &Path) -> Result<(MasterKey, MasterKeySource), KeyError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // 0700: the data directory also holds the SQLite database in embedded mode.
        DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(file_error(parent))?;
    }
    let key = MasterKey::generate();
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    let mut file = match file {
        Ok(file) => file,
        // Another instance sharing this data directory created it between our read and now: use
        // theirs, never overwrite.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return read_key_file(path).map(|key| (key, MasterKeySource::File(path.to_path_buf())));
        }
        Err(e) => return Err(file_error(path)(e)),
    };
    // Two writes rather than pushing '\n' onto the text: a reallocation would leave a copy of the
    // key in freed memory.
    let text = key.to_base64();
    let written = file.write_all(text.as_bytes()).and_then(|()| file.write_all(b"\n")).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Nothing has been sealed with this key yet: remove the partial file rather than leave one
        // that the next start would reject as damaged.
        let _ = std::fs::remove_file(path);
        return Err(file_error(path)(e));
    }
    tracing::warn!(
        path = %path.display(),
        "generated a new master key; back this file up with the database: without it, sealed keys and secrets are lost"
    );
    Ok((key, MasterKeySource::Generated(path.to_path_buf())))
}
