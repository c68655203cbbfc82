//! Certificate revocation lists of the card-issuing CAs.
//!
//! IGC-Santé publishes one CRL per CA, renewed every morning. `CrlCache` fetches them from the
//! configured sources (http(s) URLs or local files), keeps the newest one per issuer in a
//! durable directory (so a restart needs no network) and publishes an immutable [`CrlSet`]
//! snapshot that validation reads without locking.
//!
//! Staleness is Habilis' own rule, not the CRL's nextUpdate: a CRL is stale when
//! `now - this_update > max_staleness`. With a daily publication, the default of 48 hours
//! (set in the configuration) tolerates one missed publication or refresh; the CA's nextUpdate
//! is often days away and would let a revocation go unnoticed for that long.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use webpki::{CertRevocationList, OwnedCertRevocationList};

use crate::cps::certificate::name_to_rfc4514;

/// Default for [`CrlSet::empty`]; the configuration sets the real value.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(48 * 3600);
/// Largest CRL accepted from a source (the IGC-Santé ones are a few megabytes).
const MAX_CRL_BYTES: usize = 64 * 1024 * 1024;
/// Time allowed for one download.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A CRL dated further in the future than this is refused: with newest-wins, such a CRL (e.g.
/// injected over plain http) would otherwise displace every genuine one until that date.
const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Bound on the distribution points learnt from presented certificates.
const MAX_NOTED_DISTRIBUTION_POINTS: usize = 32;

/// One CRL and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEntry {
    /// RFC 4514 form of the CRL issuer.
    pub issuer: String,
    /// URL or file path it was fetched from.
    pub source: String,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds, when present.
    pub next_update: Option<i64>,
    /// When Habilis fetched it, Unix seconds.
    pub fetched_at: i64,
    /// The CRL, DER.
    pub der: Vec<u8>,
}

impl CrlEntry {
    /// Reads a CRL given as DER or as PEM (`X509 CRL` block).
    pub fn from_bytes(bytes: &[u8], source: String, fetched_at: i64) -> Result<CrlEntry, String> {
        let der = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            x509_parser::pem::Pem::iter_from_buffer(bytes)
                .filter_map(Result::ok)
                .find(|block| block.label == "X509 CRL")
                .map(|block| block.contents)
                .ok_or_else(|| "PEM without a readable X509 CRL block".to_string())?
        } else {
            bytes.to_vec()
        };
        CrlEntry::from_der(der, source, fetched_at)
    }

    /// Reads a DER CRL; it must also be usable by webpki, which checks it at validation time.
    pub fn from_der(der: Vec<u8>, source: String, fetched_at: i64) -> Result<CrlEntry, String> {
        let (issuer, this_update, next_update) = {
            let crl = parse_crl(&der)?;
            (name_to_rfc4514(crl.issuer()), crl.last_update().timestamp(), crl.next_update().map(|t| t.timestamp()))
        };
        OwnedCertRevocationList::from_der(&der).map_err(|e| format!("CRL not usable for revocation checks: {e}"))?;
        Ok(CrlEntry { issuer, source, this_update, next_update, fetched_at, der })
    }

    /// DER of the issuer Name, the key CRLs are matched to certificates by.
    fn issuer_der(&self) -> Option<Vec<u8>> {
        parse_crl(&self.der).ok().map(|crl| crl.issuer().as_raw().to_vec())
    }
}

fn parse_crl(der: &[u8]) -> Result<x509_parser::revocation_list::CertificateRevocationList<'_>, String> {
    match x509_parser::parse_x509_crl(der) {
        Ok(([], crl)) => Ok(crl),
        Ok(_) => Err("trailing data after the CRL".into()),
        Err(e) => Err(format!("not a CRL (DER or PEM X509 CRL expected): {e}")),
    }
}

/// An immutable set of CRLs, at most one (the newest) per issuer.
pub struct CrlSet {
    entries: Vec<CrlEntry>,
    /// Index-aligned with `entries`: issuer Name DER and the parsed list.
    lists: Vec<(Vec<u8>, CertRevocationList<'static>)>,
    max_staleness: Duration,
}

impl std::fmt::Debug for CrlSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrlSet")
            .field("entries", &self.entries.len())
            .field("max_staleness", &self.max_staleness)
            .finish()
    }
}

impl CrlSet {
    /// No CRL: every card's revocation status is unknown.
    pub fn empty() -> Self {
        CrlSet { entries: Vec::new(), lists: Vec::new(), max_staleness: DEFAULT_MAX_STALENESS }
    }

    /// Builds a set keeping, per issuer, the entry with the latest thisUpdate. Entries whose
    /// DER cannot be parsed are dropped (they cannot come from `CrlEntry::from_der`).
    pub fn from_entries(entries: Vec<CrlEntry>, max_staleness: Duration) -> Self {
        let mut newest: HashMap<Vec<u8>, CrlEntry> = HashMap::new();
        for entry in entries {
            let Some(issuer) = entry.issuer_der() else { continue };
            match newest.get(&issuer) {
                Some(kept) if kept.this_update > entry.this_update => {}
                _ => {
                    newest.insert(issuer, entry);
                }
            }
        }
        let mut kept: Vec<(Vec<u8>, CrlEntry)> = newest.into_iter().collect();
        kept.sort_by(|a, b| a.1.issuer.cmp(&b.1.issuer));
        let mut set = CrlSet { entries: Vec::new(), lists: Vec::new(), max_staleness };
        for (issuer, entry) in kept {
            let Ok(list) = OwnedCertRevocationList::from_der(&entry.der) else { continue };
            set.lists.push((issuer, CertRevocationList::Owned(list)));
            set.entries.push(entry);
        }
        set
    }

    pub fn entries(&self) -> &[CrlEntry] {
        &self.entries
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// `now - this_update > max_staleness` (see the module documentation).
    pub fn is_stale(&self, entry: &CrlEntry, now: i64) -> bool {
        let max = i64::try_from(self.max_staleness.as_secs()).unwrap_or(i64::MAX);
        now.saturating_sub(entry.this_update) > max
    }

    /// The CRL of the issuer whose Name DER is `issuer_der` (a certificate's issuer field).
    pub fn for_issuer(&self, issuer_der: &[u8]) -> Option<(&CrlEntry, &CertRevocationList<'static>)> {
        let index = self.lists.iter().position(|(issuer, _)| issuer.as_slice() == issuer_der)?;
        Some((self.entries.get(index)?, &self.lists.get(index)?.1))
    }
}

/// Outcome of one refresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Sources read and parsed (whether or not their CRL was newer than the cached one).
    pub fetched: Vec<String>,
    /// (source, why) for the sources that failed; their issuers keep the previous CRL.
    pub failed: Vec<(String, String)>,
}

/// The CRLs in use, their durable cache directory and their sources.
pub struct CrlCache {
    dir: PathBuf,
    sources: Vec<String>,
    noted: Mutex<Vec<String>>,
    max_staleness: Duration,
    current: ArcSwap<CrlSet>,
    /// One refresh at a time, so two never race on the cache files or the snapshot.
    refreshing: tokio::sync::Mutex<()>,
}

impl CrlCache {
    /// Opens (creating it if needed) the cache directory and loads every CRL cached there,
    /// without network access. Unreadable cache files are skipped with a warning: the next
    /// refresh replaces them.
    pub fn open(dir: &Path, sources: Vec<String>, max_staleness: Duration) -> anyhow::Result<CrlCache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the CRL cache directory {}", dir.display()))?;
        let listing =
            std::fs::read_dir(dir).with_context(|| format!("cannot read the CRL cache directory {}", dir.display()))?;
        let mut entries = Vec::new();
        for item in listing {
            let path = item.with_context(|| format!("cannot read the CRL cache directory {}", dir.display()))?.path();
            let is_cached_crl = path.extension().is_some_and(|e| e == "der")
                && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("crl-"));
            if !is_cached_crl {
                continue;
            }
            match load_cached(&path) {
                Ok(entry) => entries.push(entry),
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable cached CRL"),
            }
        }
        let sources = sources.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        Ok(CrlCache {
            dir: dir.to_path_buf(),
            sources,
            noted: Mutex::new(Vec::new()),
            max_staleness,
            current: ArcSwap::from_pointee(CrlSet::from_entries(entries, max_staleness)),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The CRLs in use now.
    pub fn snapshot(&self) -> Arc<CrlSet> {
        self.current.load_full()
    }

    /// Remembers CRL distribution points of presented cards so the next refresh fetches them
    /// too (http(s) only, at most 32 in all). Only pass URLs of certificates whose chain
    /// verified: each noted URL is fetched by the server.
    pub fn note_distribution_points(&self, urls: &[String]) {
        let Ok(mut noted) = self.noted.lock() else { return };
        for url in urls {
            if noted.len() >= MAX_NOTED_DISTRIBUTION_POINTS {
                break;
            }
            let usable = url.len() <= 2048
                && url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if usable && !self.sources.contains(url) && !noted.contains(url) {
                noted.push(url.clone());
            }
        }
    }

    /// Fetches every source, keeps the newest CRL per issuer (never an older thisUpdate),
    /// writes the new ones into the cache directory and swaps the snapshot. A failing source
    /// leaves its issuer's previous CRL in place.
    pub async fn refresh(&self, http: &reqwest::Client, now: i64) -> RefreshReport {
        let _one_at_a_time = self.refreshing.lock().await;
        let mut sources = self.sources.clone();
        if let Ok(noted) = self.noted.lock() {
            sources.extend(noted.iter().filter(|url| !self.sources.contains(url)).cloned());
        }

        let current = self.snapshot();
        let mut entries: Vec<CrlEntry> = current.entries().to_vec();
        let mut report = RefreshReport::default();
        for source in sources {
            let entry = match fetch(http, &source).await {
                Ok(bytes) => CrlEntry::from_bytes(&bytes, source.clone(), now),
                Err(e) => Err(e),
            };
            let entry = match entry {
                Ok(entry) if entry.this_update > now.saturating_add(MAX_CLOCK_SKEW_SECS) => {
                    Err(format!("the CRL claims to be issued in the future (thisUpdate {})", entry.this_update))
                }
                other => other,
            };
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    report.failed.push((source, e));
                    continue;
                }
            };
            report.fetched.push(source);
            let Some(issuer) = entry.issuer_der() else { continue };
            let previous = entries.iter().position(|e| e.issuer_der().as_ref() == Some(&issuer));
            if previous.is_some_and(|index| entries[index].this_update > entry.this_update) {
                continue; // a stale mirror or replay: keep the newer one
            }
            if let Err(e) = self.persist(&issuer, &entry).await {
                tracing::warn!(source = %entry.source, error = %format!("{e:#}"), "CRL kept in memory only: cannot write it to the cache directory");
            }
            match previous {
                Some(index) => entries[index] = entry,
                None => entries.push(entry),
            }
        }
        self.current.store(Arc::new(CrlSet::from_entries(entries, self.max_staleness)));
        report
    }

    /// Seconds since the oldest thisUpdate in use, for the freshness metric.
    pub fn oldest_age(&self, now: i64) -> Option<i64> {
        self.snapshot().entries().iter().map(|e| e.this_update).min().map(|oldest| now.saturating_sub(oldest))
    }

    /// Writes the CRL and its metadata, each atomically (temporary file then rename), named
    /// after the issuer so a newer CRL replaces the older one.
    async fn persist(&self, issuer_der: &[u8], entry: &CrlEntry) -> anyhow::Result<()> {
        let stem = format!("crl-{}", &hex::encode(Sha256::digest(issuer_der))[..32]);
        let metadata = serde_json::json!({
            "issuer": entry.issuer,
            "source": entry.source,
            "fetched_at": entry.fetched_at,
        });
        let metadata = serde_json::to_vec_pretty(&metadata)?;
        write_atomic(&self.dir.join(format!("{stem}.json")), &metadata).await?;
        write_atomic(&self.dir.join(format!("{stem}.der")), &entry.der).await
    }
}

async fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("crl");
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = async {
        let mut file = tokio::fs::File::create(&temporary).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, contents).await?;
        file.sync_all().await?;
        tokio::fs::rename(&temporary, path).await
    };
    if let Err(e) = write.await {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Reads a cached CRL and its metadata (source and fetch time; if the metadata file is
/// missing, the file itself and its modification time stand in).
fn load_cached(path: &Path) -> Result<CrlEntry, String> {
    let der = std::fs::read(path).map_err(|e| e.to_string())?;
    let metadata: Option<serde_json::Value> =
        std::fs::read(path.with_extension("json")).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let source = metadata
        .as_ref()
        .and_then(|m| m["source"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| path.display().to_string());
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0);
    let fetched_at = metadata.as_ref().and_then(|m| m["fetched_at"].as_i64()).unwrap_or(modified);
    CrlEntry::from_der(der, source, fetched_at)
}

/// Reads a source: http(s) URL, `file://` URL or plain path.
async fn fetch(http: &reqwest::Client, source: &str) -> Result<Vec<u8>, String> {
    let lower = source.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return fetch_url(http, source).await;
    }
    let path = source.strip_prefix("file://").unwrap_or(source);
    let bytes = tokio::fs::read(path).await.map_err(|e| format!("cannot read {path}: {e}"))?;
    if bytes.len() > MAX_CRL_BYTES {
        return Err(format!("larger than {MAX_CRL_BYTES} bytes"));
    }
    Ok(bytes)
}

async fn fetch_url(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let describe = |e: reqwest::Error| format!("{:#}", anyhow::Error::new(e));
    let mut response = http.get(url).timeout(FETCH_TIMEOUT).send().await.map_err(describe)?;
    if !response.status().is_success() {
        return Err(format!("HTTP status {}", response.status()));
    }
    if response.content_length().is_some_and(|len| len > MAX_CRL_BYTES as u64) {
        return Err(format!("larger than {MAX_CRL_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_CRL_BYTES {
            return Err(format!("larger than {MAX_CRL_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::cps::devpki;

    const HOUR: i64 = 3600;

    /// A dev PKI (for its intermediate key) and a clock.
    struct Fixture {
        pki: tempfile::TempDir,
        cache_dir: tempfile::TempDir,
        now: i64,
    }

    impl Fixture {
        fn new() -> Fixture {
            let pki = tempfile::tempdir().unwrap();
            devpki::generate(pki.path(), &["localhost".into()], None).unwrap();
            Fixture { pki, cache_dir: tempfile::tempdir().unwrap(), now: crate::unix_now() }
        }

        /// Signs a CRL dated `this_update` and returns the path of crl.der.
        fn publish(&self, this_update: i64) -> String {
            devpki::publish_crl(self.pki.path(), &[], this_update, this_update + 24 * HOUR).unwrap();
            self.pki.path().join("crl.der").display().to_string()
        }

        fn cache(&self, sources: Vec<String>) -> CrlCache {
            CrlCache::open(self.cache_dir.path(), sources, DEFAULT_MAX_STALENESS).unwrap()
        }
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder().build().unwrap()
    }

    #[tokio::test]
    async fn file_source_and_durable_reload_without_network() {
        let f = Fixture::new();
        let source = f.publish(f.now - HOUR);
        let cache = f.cache(vec![source.clone()]);
        assert!(cache.snapshot().entries().is_empty());
        assert_eq!(cache.oldest_age(f.now), None);
        let report = cache.refresh(&http(), f.now).await;
        assert_eq!(report, RefreshReport { fetched: vec![source.clone()], failed: vec![] });
        let snapshot = cache.snapshot();
        let entry = &snapshot.entries()[0];
        assert_eq!(entry.issuer, "CN=AC HABILIS TEST PERSONNES,O=Habilis dev-pki,C=FR");
        assert_eq!(entry.this_update, f.now - HOUR);
        assert_eq!(entry.next_update, Some(f.now + 23 * HOUR));
        assert_eq!(entry.fetched_at, f.now);
        assert_eq!(cache.oldest_age(f.now), Some(HOUR));

        // A restart with no source at all finds the same CRL in the directory.
        let reopened = f.cache(vec![]);
        assert_eq!(reopened.snapshot().entries(), snapshot.entries());
        let issuer = x509_parser::parse_x509_crl(&entry.der).unwrap().1.issuer().as_raw().to_vec();
        assert!(reopened.snapshot().for_issuer(&issuer).is_some());
        assert!(reopened.snapshot().for_issuer(b"\x30\x00").is_none());
    }

    #[tokio::test]
    async fn newest_wins_and_an_older_crl_never_replaces_it() {
        let f = Fixture::new();
        let source = f.publish(f.now - 2 * HOUR);
        let cache = f.cache(vec![source.clone()]);
        cache.refresh(&http(), f.now).await;
        assert_eq!(cache.snapshot().entries()[0].this_update, f.now - 2 * HOUR);

        f.publish(f.now - 5 * HOUR); // an older CRL served again (mirror lag, replay)
        let report = cache.refresh(&http(), f.now).await;
        assert!(report.failed.is_empty());
        assert_eq!(cache.snapshot().entries()[0].this_update, f.now - 2 * HOUR);
        assert_eq!(f.cache(vec![]).snapshot().entries()[0].this_update, f.now - 2 * HOUR, "disk kept the newest");

        f.publish(f.now - HOUR);
        cache.refresh(&http(), f.now).await;
        assert_eq!(cache.snapshot().entries().len(), 1);
        assert_eq!(cache.snapshot().entries()[0].this_update, f.now - HOUR);
        assert_eq!(f.cache(vec![]).snapshot().entries()[0].this_update, f.now - HOUR);
    }

    #[tokio::test]
    async fn failing_source_keeps_the_previous_crl() {
        let f = Fixture::new();
        let source = f.publish(f.now - HOUR);
        let missing = f.pki.path().join("nowhere.crl").display().to_string();
        let cache = f.cache(vec![source.clone(), missing.clone()]);
        let report = cache.refresh(&http(), f.now).await;
        assert_eq!(report.fetched, std::slice::from_ref(&source));
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, missing);

        fs::write(&source, b"<html>maintenance</html>").unwrap();
        let report = cache.refresh(&http(), f.now + HOUR).await;
        assert!(report.fetched.is_empty());
        assert_eq!(report.failed.len(), 2);
        assert!(report.failed[0].1.contains("not a CRL"), "{}", report.failed[0].1);
        assert_eq!(cache.snapshot().entries().len(), 1);
        assert_eq!(cache.snapshot().entries()[0].this_update, f.now - HOUR);
    }

    #[tokio::test]
    async fn pem_sources_and_future_dated_crls() {
        let f = Fixture::new();
        f.publish(f.now + 2 * HOUR);
        let pem = f.pki.path().join("crl.pem").display().to_string();
        let cache = f.cache(vec![format!("file://{pem}")]);
        let report = cache.refresh(&http(), f.now).await;
        assert!(report.failed[0].1.contains("future"), "{:?}", report);
        assert!(cache.snapshot().entries().is_empty());

        f.publish(f.now);
        let report = cache.refresh(&http(), f.now).await;
        assert_eq!(report.fetched.len(), 1, "{report:?}");
        assert_eq!(cache.snapshot().entries()[0].this_update, f.now);
    }

    #[tokio::test]
    async fn http_sources() {
        let f = Fixture::new();
        let source = f.publish(f.now - HOUR);
        let der = fs::read(&source).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut request = vec![0u8; 4096];
                let read = socket.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..read]).to_string();
                let response = if request.starts_with("GET /personnes.crl ") {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/pkix-crl\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        der.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&der);
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
                };
                let _ = socket.write_all(&response).await;
            }
        });
        let good = format!("http://{address}/personnes.crl");
        let absent = format!("http://{address}/absent.crl");
        let cache = f.cache(vec![good.clone(), absent.clone()]);
        let report = cache.refresh(&http(), f.now).await;
        assert_eq!(report.fetched, std::slice::from_ref(&good));
        assert_eq!(report.failed, [(absent, "HTTP status 404 Not Found".to_string())]);
        assert_eq!(cache.snapshot().entries()[0].source, good);
    }

    #[test]
    fn staleness_rule() {
        let f = Fixture::new();
        let der = fs::read(f.publish(f.now)).unwrap();
        let entry = CrlEntry::from_der(der, "test".into(), f.now).unwrap();
        let set = CrlSet::from_entries(vec![entry.clone()], Duration::from_secs(48 * 3600));
        assert!(!set.is_stale(&entry, f.now));
        assert!(!set.is_stale(&entry, f.now + 48 * HOUR));
        assert!(set.is_stale(&entry, f.now + 48 * HOUR + 1));
        assert!(!CrlSet::empty().is_stale(&entry, f.now + 47 * HOUR));
        assert!(!set.is_stale(&entry, i64::MIN));
        assert!(set.is_stale(&entry, i64::MAX));
    }

    #[test]
    fn set_keeps_the_newest_per_issuer() {
        let f = Fixture::new();
        let old = CrlEntry::from_der(fs::read(f.publish(f.now - 2 * HOUR)).unwrap(), "a".into(), f.now).unwrap();
        let new = CrlEntry::from_der(fs::read(f.publish(f.now - HOUR)).unwrap(), "b".into(), f.now).unwrap();
        let set = CrlSet::from_entries(vec![new.clone(), old.clone()], DEFAULT_MAX_STALENESS);
        assert_eq!(set.entries(), std::slice::from_ref(&new));
        let set = CrlSet::from_entries(vec![old, new.clone()], DEFAULT_MAX_STALENESS);
        assert_eq!(set.entries(), [new]);
        assert!(CrlEntry::from_bytes(b"junk", "x".into(), 0).is_err());
        assert!(
            CrlEntry::from_bytes(b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n", "x".into(), 0)
                .is_err()
        );
    }

    #[test]
    fn unreadable_cache_files_are_skipped() {
        let f = Fixture::new();
        fs::write(f.cache_dir.path().join("crl-broken.der"), b"junk").unwrap();
        fs::write(f.cache_dir.path().join("notes.txt"), b"not a crl").unwrap();
        let cache = f.cache(vec![]);
        assert!(cache.snapshot().entries().is_empty());
    }

    #[test]
    fn noted_distribution_points_are_bounded_and_http_only() {
        let f = Fixture::new();
        let cache = f.cache(vec!["http://crl.example.test/a.crl".into()]);
        let mut urls: Vec<String> = (0..40).map(|i| format!("http://crl.example.test/{i}.crl")).collect();
        urls.push("ldap://ldap.example.test/cn=x".into());
        urls.push("file:///etc/passwd".into());
        urls.push("http://crl.example.test/a.crl".into());
        cache.note_distribution_points(&urls[..2]);
        cache.note_distribution_points(&urls[..2]);
        assert_eq!(cache.noted.lock().unwrap().len(), 2);
        cache.note_distribution_points(&urls[40..]);
        assert_eq!(cache.noted.lock().unwrap().len(), 2);
        cache.note_distribution_points(&urls);
        assert_eq!(cache.noted.lock().unwrap().len(), MAX_NOTED_DISTRIBUTION_POINTS);
    }
}
