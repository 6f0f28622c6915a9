//! A new store's file, written whole from an image of the empty schema.
//!
//! Creating a store by running the schema's statements parses and executes
//! each of them, then switches the file to WAL through a rollback journal: of
//! a daemon's CPU for a first run of 200 contacts, about a ninth. The image is
//! made once per process, from an in-memory store migrated as any other, and
//! each new store is that image written beside its path and linked into
//! place. A link fails when the path exists, so of two processes creating
//! the same store one wins and the other opens the winner's file; neither
//! ever opens a half-written one.

use crate::ContactStore;
use anyhow::Result;
use rusqlite::{Connection, MAIN_DB};
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The database header's file format versions (bytes 18 and 19): 2 is WAL.
const FORMAT_VERSIONS: std::ops::Range<usize> = 18..20;
const WAL: u8 = 2;

/// The empty store at this build's schema version, in WAL mode; `None`
/// when it could not be made (stores are then created the long way).
fn image() -> Option<&'static [u8]> {
    static IMAGE: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    IMAGE
        .get_or_init(|| match make_image() {
            Ok(image) => Some(image),
            Err(error) => {
                tracing::debug!(%error, "no store image: new stores run the schema");
                None
            }
        })
        .as_deref()
}

/// An in-memory store that ran the migrations, serialized and marked WAL
/// (an in-memory database keeps no journal of its own to say so).
fn make_image() -> Result<Vec<u8>> {
    let conn = Connection::open_in_memory()?;
    ContactStore::migrate(&conn)?;
    let mut image = conn.serialize(MAIN_DB)?.to_vec();
    anyhow::ensure!(image.len() >= 100, "an image without a header");
    image[FORMAT_VERSIONS].fill(WAL);
    Ok(image)
}

/// Creates the store at `path` from the image when no file is there. Any
/// failure leaves the path as it was, for SQLite to create the store itself.
pub(crate) fn create(path: &Path) {
    if path.exists() {
        return;
    }
    let Some(image) = image() else { return };
    if let Err(error) = link_new(path, image)
        && error.kind() != ErrorKind::AlreadyExists
    {
        tracing::debug!(%error, path = %path.display(), "a new store the long way");
    }
}

/// Writes `image` to a file of its own beside `path`, flushed to disk (a
/// crash must not leave a linked store of zeros), and links it to `path`.
fn link_new(path: &Path, image: &[u8]) -> std::io::Result<()> {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let spare = path.with_file_name(format!(
        ".{}.{}-{}.new",
        name.unwrap_or_default(),
        std::process::id(),
        MADE.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create_new(&spare)?;
        file.write_all(image)?;
        file.sync_all()?;
        std::fs::hard_link(&spare, path)
    })();
    let _ = std::fs::remove_file(&spare);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The images written beside stores in `dir` and still there.
    fn spares(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".new")
            })
            .count()
    }

    #[test]
    fn a_store_made_from_the_image_is_the_schema_in_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.sqlite");
        create(&path);
        assert!(path.is_file(), "the image was linked into place");
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, crate::SCHEMA_VERSION);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        // The same schema, statement for statement, as a store that ran it.
        let schema = |conn: &Connection| -> Vec<(String, String)> {
            conn.prepare("SELECT name, sql FROM sqlite_schema ORDER BY name")
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    ))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let ran = Connection::open_in_memory().unwrap();
        ContactStore::migrate(&ran).unwrap();
        assert_eq!(schema(&conn), schema(&ran));
        assert!(!schema(&conn).is_empty());
        // The image's own file is gone once linked.
        assert_eq!(spares(dir.path()), 0);
    }

    /// Openers racing to create one store all open the same file, and what
    /// one writes the others read.
    #[test]
    fn openers_racing_for_a_new_store_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raced.sqlite");
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for n in 0..8 {
                let (path, barrier) = (&path, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let store = ContactStore::open(path).unwrap();
                    let data = crate::ContactData {
                        name: Some(format!("opener {n}")),
                        emails: vec![format!("{n}@x.io")],
                        phones: Vec::new(),
                        fields: Default::default(),
                    };
                    store.create(&n.to_string(), &data, None).unwrap();
                });
            }
        });
        let store = ContactStore::open(&path).unwrap();
        assert_eq!(store.contacts().unwrap().len(), 8);
        assert_eq!(spares(dir.path()), 0);
    }

    #[test]
    fn an_existing_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        std::fs::write(&path, b"not a store").unwrap();
        create(&path);
        assert_eq!(std::fs::read(&path).unwrap(), b"not a store");
        // Nor one that appears between the look and the link.
        let image = image().unwrap();
        let err = link_new(&path, image).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"not a store");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
