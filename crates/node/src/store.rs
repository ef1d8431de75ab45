//! The node's durable store (sled under `$AGENTOS_HOME/store`): the chunks of
//! each workspace's Automerge document, the workspace index, the install's
//! Automerge ActorId, the audit log and the P2P state (roster, per-peer sync
//! state, sealing sequence, relay cursors) and the web server's share grants
//! (hashed).
//!
//! Fsync policy: writes the user waits on (create, destroy, session save) are
//! flushed before the daemon answers, so an acknowledged write survives
//! `kill -9`. Frequent writes (state transitions) rely on sled's periodic
//! flush (every 200 ms). A store that cannot be opened is moved aside as a
//! backup (`store.corrupt-<ms>`) and a fresh one is created: nothing is
//! deleted, and the daemon keeps running.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("could not move the damaged store aside to {path}: {source}")]
    Backup {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    docs: sled::Tree,
    meta: sled::Tree,
    audit: sled::Tree,
    p2p: sled::Tree,
    web: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

fn open_db(dir: &Path) -> Result<sled::Db, String> {
    let dir = dir.to_path_buf();
    // sled can panic on some kinds of damage: treat that as corruption too.
    std::panic::catch_unwind(move || {
        sled::Config::new()
            .path(&dir)
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(Some(200))
            .open()
    })
    .map_err(|_| "the store panicked while opening".to_string())?
    .map_err(|e| e.to_string())
}

fn doc_key(ws: &str, index: u64) -> Vec<u8> {
    let mut k = ws.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn doc_prefix(ws: &str) -> Vec<u8> {
    let mut k = ws.as_bytes().to_vec();
    k.push(0);
    k
}

impl Store {
    /// Open the store; on damage, back it up and start fresh. The second value
    /// is a notice for the user (E008) when that happened.
    pub fn open(dir: &Path) -> Result<(Store, Option<String>), StoreError> {
        let (db, notice) = match open_db(dir) {
            Ok(db) => (db, None),
            Err(why) => {
                let backup = dir.with_file_name(format!(
                    "store.corrupt-{}",
                    agentos_actors::holder::now_ms()
                ));
                std::fs::rename(dir, &backup).map_err(|source| StoreError::Backup {
                    path: backup.clone(),
                    source,
                })?;
                let db = sled::Config::new()
                    .path(dir)
                    .cache_capacity(8 * 1024 * 1024)
                    .flush_every_ms(Some(200))
                    .open()?;
                (
                    db,
                    Some(format!(
                        "E008 the store at {} was damaged ({why}); it was moved to {} and agents were rebuilt from their run directories",
                        dir.display(),
                        backup.display()
                    )),
                )
            }
        };
        let docs = db.open_tree("docs")?;
        let meta = db.open_tree("meta")?;
        let audit = db.open_tree("audit")?;
        let p2p = db.open_tree("p2p")?;
        let web = db.open_tree("web")?;
        Ok((
            Store {
                db,
                docs,
                meta,
                audit,
                p2p,
                web,
            },
            notice,
        ))
    }

    /// Append audit records; each gets the next cursor (`seq`).
    pub fn append_audit(
        &self,
        records: &mut [agentos_proto::AuditRecord],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in records.iter_mut() {
            r.seq = self.db.generate_id()? + 1;
            let value = serde_json::to_vec(r).unwrap_or_default();
            batch.insert(&r.seq.to_be_bytes(), value);
        }
        self.audit.apply_batch(batch)?;
        Ok(())
    }

    /// Audit records after cursor `after`, oldest first, filtered.
    pub fn audit_records(
        &self,
        agent_id: Option<&str>,
        since_ms: Option<u64>,
        after: Option<u64>,
        limit: usize,
    ) -> Vec<agentos_proto::AuditRecord> {
        let start = after.map(|a| a + 1).unwrap_or(0).to_be_bytes();
        let mut out = Vec::new();
        for item in self.audit.range(start..) {
            let Ok((_, v)) = item else { break };
            let Ok(r) = serde_json::from_slice::<agentos_proto::AuditRecord>(&v) else {
                continue;
            };
            if agent_id.is_some_and(|a| a != r.agent_id) || since_ms.is_some_and(|s| r.ts_ms < s) {
                continue;
            }
            out.push(r);
        }
        // The newest `limit`, still oldest first.
        if out.len() > limit {
            out.drain(..out.len() - limit);
        }
        out
    }

    /// This install's Automerge actor id, created once.
    pub fn actor_id(&self) -> Result<[u8; 16], StoreError> {
        if let Some(v) = self.meta.get("actor_id")?
            && let Ok(a) = <[u8; 16]>::try_from(v.as_ref())
        {
            return Ok(a);
        }
        let mut a = [0u8; 16];
        getrandom::fill(&mut a).map_err(|e| sled::Error::Unsupported(e.to_string()))?;
        // Never the all-zero actor: the crdt crate reserves it.
        a[0] |= 1;
        self.meta.insert("actor_id", &a[..])?;
        self.db.flush()?;
        Ok(a)
    }

    /// P2P state (`p2p` tree): the roster log, per-peer sync state, the
    /// sealing sequence, relay cursors, sync switches.
    /// The web server's share grants (hashed secrets only), keyed by grant id.
    pub fn web_get(&self, key: &str) -> Option<Vec<u8>> {
        self.web.get(key).ok().flatten().map(|v| v.to_vec())
    }

    /// Store a grant and flush: an acknowledged share or revocation
    /// survives `kill -9`.
    pub fn web_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.web.insert(key, value)?;
        self.web.flush()?;
        Ok(())
    }

    pub fn web_scan(&self) -> Vec<(String, Vec<u8>)> {
        self.web
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            .collect()
    }

    pub fn p2p_get(&self, key: &str) -> Option<Vec<u8>> {
        self.p2p.get(key).ok().flatten().map(|v| v.to_vec())
    }

    pub fn p2p_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.p2p.insert(key, value)?;
        Ok(())
    }

    /// Entries under `prefix`, with the prefix stripped from the keys.
    pub fn p2p_scan(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.p2p
            .scan_prefix(prefix)
            .filter_map(|r| r.ok())
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                    v.to_vec(),
                )
            })
            .collect()
    }

    pub fn p2p_del(&self, key: &str) -> Result<(), StoreError> {
        self.p2p.remove(key)?;
        Ok(())
    }

    pub fn workspaces(&self) -> Vec<(String, String)> {
        self.meta
            .scan_prefix("ws/")
            .filter_map(|r| r.ok())
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k[3..]).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }

    pub fn set_workspace(&self, id: &str, path: &str) -> Result<(), StoreError> {
        self.meta.insert(format!("ws/{id}"), path.as_bytes())?;
        Ok(())
    }

    /// All chunks of a workspace document, concatenated (Automerge loads that).
    pub fn load_doc(&self, ws: &str) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        for r in self.docs.scan_prefix(doc_prefix(ws)) {
            let (_, v) = r?;
            out.extend_from_slice(&v);
        }
        Ok(out)
    }

    pub fn chunk_count(&self, ws: &str) -> usize {
        self.docs.scan_prefix(doc_prefix(ws)).count()
    }

    pub fn append_chunk(&self, ws: &str, chunk: &[u8]) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let next = match self.docs.scan_prefix(doc_prefix(ws)).next_back() {
            Some(r) => {
                let (k, _) = r?;
                let mut b = [0u8; 8];
                b.copy_from_slice(&k[k.len() - 8..]);
                u64::from_be_bytes(b) + 1
            }
            None => 0,
        };
        self.docs.insert(doc_key(ws, next), chunk)?;
        Ok(())
    }

    /// Compaction: replace every chunk with one full save, atomically.
    pub fn replace_doc(&self, ws: &str, full: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in self.docs.scan_prefix(doc_prefix(ws)) {
            let (k, _) = r?;
            batch.remove(k);
        }
        batch.insert(doc_key(ws, 0), full);
        self.docs.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Move a workspace's damaged document aside (kept under `corrupt/`).
    pub fn quarantine_doc(&self, ws: &str) -> Result<(), StoreError> {
        let bytes = self.load_doc(ws)?;
        self.meta.insert(
            format!("corrupt/{ws}/{}", agentos_actors::holder::now_ms()),
            bytes,
        )?;
        let mut batch = sled::Batch::default();
        for r in self.docs.scan_prefix(doc_prefix(ws)) {
            let (k, _) = r?;
            batch.remove(k);
        }
        self.docs.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_append_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let (s, notice) = Store::open(&dir.path().join("store")).unwrap();
        assert!(notice.is_none());
        s.append_chunk("w", b"ab").unwrap();
        s.append_chunk("w", b"cd").unwrap();
        s.append_chunk("w2", b"zz").unwrap();
        assert_eq!(s.load_doc("w").unwrap(), b"abcd");
        s.replace_doc("w", b"ABCD").unwrap();
        assert_eq!(s.chunk_count("w"), 1);
        assert_eq!(s.load_doc("w").unwrap(), b"ABCD");
        assert_eq!(s.load_doc("w2").unwrap(), b"zz");
        let a = s.actor_id().unwrap();
        assert_eq!(a, s.actor_id().unwrap());
    }

    #[test]
    fn damaged_store_is_backed_up_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(
            path.join("conf"),
            b"\xff\xfe garbage that is not a sled config",
        )
        .unwrap();
        std::fs::write(path.join("db"), vec![0xAB; 4096]).unwrap();
        let (s, notice) = Store::open(&path).unwrap();
        let notice = notice.expect("damage must be reported");
        assert!(notice.starts_with("E008"), "{notice}");
        s.append_chunk("w", b"x").unwrap();
        let backups: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("store.corrupt-")
            })
            .collect();
        assert_eq!(backups.len(), 1);
        assert!(
            backups[0].path().join("db").exists(),
            "the damaged data is kept"
        );
    }
}
