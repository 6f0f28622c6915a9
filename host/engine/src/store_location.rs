//! Where a sync keeps its state: the embedded SQLite file (`store.path`, the
//! default) or a namespace in a shared PostgreSQL database (`store.url`), and
//! opening either as one [`Store`].

use crate::store::DynStore;
use anyhow::Result;
use std::fmt;
use std::path::PathBuf;

/// A store to open, as a config names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file, created when missing.
    Sqlite(PathBuf),
    /// A namespace (PostgreSQL schema) of a database.
    Postgres {
        /// `postgresql://user@host:port/db`; may hold a password, so it is
        /// shown only through [`crmsync_store_postgres::redact`].
        url: String,
        namespace: String,
    },
}

impl StoreLocation {
    /// Opens the store (creating or upgrading its schema).
    pub fn open(&self) -> Result<DynStore> {
        Ok(match self {
            StoreLocation::Sqlite(path) => Box::new(crate::store::ContactStore::open(path)?),
            StoreLocation::Postgres { url, namespace } => {
                Box::new(crmsync_store_postgres::PgStore::connect(url, namespace)?)
            }
        })
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres { url, namespace } => write!(
                f,
                "{} (namespace {namespace})",
                crmsync_store_postgres::redact(url)
            ),
        }
    }
}
