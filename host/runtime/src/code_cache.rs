//! The compiled-code cache: the component compiled once, kept on disk, and
//! loaded on later starts only when it is provably the code this engine
//! compiled from these bytes.
//!
//! Loading compiled code is `unsafe`: wasmtime runs what the artifact holds.
//! So an artifact is
//! - **named** by SHA-256 of the component's SHA-256 and of the engine's
//!   compatibility key (stable across Rust releases, unlike `DefaultHasher`):
//!   a rebuilt component or another wasmtime never finds stale code. The
//!   embedded component's digest is taken at build time, since hashing its
//!   3.6 MB cost 2.2 ms of a 3.5 ms start;
//! - **written atomically** (a temporary file, then a rename), with a trailer
//!   holding its length and CRC-32: a truncated or damaged artifact (a crash
//!   mid-write, a disk error, a flipped byte) fails the check and is compiled
//!   again, never loaded;
//! - **kept only where only this user can write**: a cache folder or artifact
//!   owned by another user, or writable by group or others, is not used (a
//!   warning, and the component is compiled), since whoever can write there
//!   could plant code. Within that boundary the checksum guards against
//!   accidents; a cryptographic digest of the 3 MB artifact would cost about
//!   2 ms per start (measured) and protect against no one the folder's
//!   permissions do not already keep out.

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Ends every artifact: `len: u64 LE`, `crc32: u32 LE`, this magic.
const MAGIC: &[u8; 8] = b"crmsync1";
const TRAILER: usize = 8 + 4 + MAGIC.len();

/// Where compiled components are kept: `CRMSYNC_CACHE_DIR`, else the user's
/// cache folder (`$XDG_CACHE_HOME/crmsync` or `~/.cache/crmsync`).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CRMSYNC_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("crmsync"))
}

/// Compiles the component, or loads the code compiled for the same bytes by
/// this engine on an earlier run: start-up then costs a hash of the
/// component, a checksum of the artifact and a load instead of Cranelift's
/// half second. A cache that cannot be used only costs a compile.
pub fn load(engine: &Engine, component: Digested<'_>, cache: Option<&Path>) -> Result<Component> {
    let cache = cache.filter(|dir| match trusted(dir, true) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(
                "not using the compiled-code cache {}: {why:#}",
                dir.display()
            );
            false
        }
    });
    let artifact = cache.map(|dir| dir.join(artifact_name(engine, &component.sha256)));
    if let Some(artifact) = artifact.as_ref().filter(|a| a.is_file()) {
        match verify(artifact) {
            // SAFETY: the artifact is the output of `Component::serialize` by
            // an engine with this compatibility key (its name says so), in a
            // folder only this user can write, and its checksum matches what
            // was written; wasmtime checks the engine compatibility again.
            // (The trailer after the code is outside every section wasmtime reads.)
            Ok(()) => match unsafe { Component::deserialize_file(engine, artifact) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!("recompiling: {} unusable: {e:?}", artifact.display()),
            },
            Err(why) => tracing::warn!("recompiling: {}: {why:#}", artifact.display()),
        }
    }
    let component = Component::new(engine, component.bytes).map_err(|e| anyhow!("{e:?}"))?;
    if let Some(Err(e)) = artifact.map(|artifact| store(&component, &artifact)) {
        tracing::warn!("compiled component not cached: {e:#}");
    }
    Ok(component)
}

/// A component's bytes with their SHA-256.
#[derive(Clone, Copy)]
pub struct Digested<'a> {
    bytes: &'a [u8],
    sha256: [u8; 32],
}

impl<'a> Digested<'a> {
    /// `bytes`, hashed now.
    pub fn new(bytes: &'a [u8]) -> Self {
        Digested {
            bytes,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    /// `bytes` with the SHA-256 taken of them earlier (at build time). A
    /// wrong digest could load another component's compiled code: callers
    /// pass only a digest computed from these very bytes (a test checks the
    /// embedded component's), and hashing them again here would undo the
    /// point.
    pub fn with_sha256(bytes: &'a [u8], sha256: [u8; 32]) -> Self {
        Digested { bytes, sha256 }
    }

    /// The digest.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }
}

/// `component-<sha256 of the component's sha256 and the engine's
/// compatibility key>.cwasm`.
fn artifact_name(engine: &Engine, component_sha256: &[u8; 32]) -> String {
    use std::hash::Hash;
    let mut digest = Sha256::new();
    digest.update(component_sha256);
    // The compatibility key is only exposed as `Hash`: fed to the digest as is.
    struct Feed<'a>(&'a mut Sha256);
    impl std::hash::Hasher for Feed<'_> {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    engine
        .precompile_compatibility_hash()
        .hash(&mut Feed(&mut digest));
    let hex: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("component-{hex}.cwasm")
}

/// Whether the artifact's trailer's length and checksum match its code. Read
/// through small buffers: the code itself is then mapped, not copied.
fn verify(artifact: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    trusted(artifact, false)?;
    let file = std::fs::File::open(artifact).context("cannot read it")?;
    let size = file.metadata().context("cannot read it")?.len();
    let Some(body) = size.checked_sub(TRAILER as u64) else {
        bail!("truncated: {size} bytes");
    };
    let mut trailer = [0u8; TRAILER];
    file.read_exact_at(&mut trailer, body)
        .context("cannot read its trailer")?;
    if &trailer[12..] != MAGIC {
        bail!("no crmsync trailer (truncated, or not written by crmsync)");
    }
    let length = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(trailer[8..12].try_into().expect("4 bytes"));
    if length != body {
        bail!("truncated: {body} bytes of {length}");
    }
    // Checking reads all of the artifact (8 MB), most of a start from the
    // cache, so its two halves are summed on two threads (a start took 20%
    // less, docs/performance.md); on one if a thread cannot start.
    let half = body / 2;
    let hasher = std::thread::scope(|scope| -> Result<crc32fast::Hasher> {
        let second = std::thread::Builder::new()
            .spawn_scoped(scope, || checksum(&file, half, body - half))
            .ok();
        let Some(second) = second else {
            return checksum(&file, 0, body);
        };
        let mut hasher = checksum(&file, 0, half)?;
        let second = second
            .join()
            .map_err(|_| anyhow!("checking it panicked"))??;
        hasher.combine(&second);
        Ok(hasher)
    })?;
    if hasher.finalize() != crc {
        bail!("damaged: its checksum does not match");
    }
    Ok(())
}

/// The CRC-32 state of `len` bytes of `file` from `offset`, read through a
/// small buffer (positioned reads, so two threads can share the file).
fn checksum(file: &std::fs::File, offset: u64, len: u64) -> Result<crc32fast::Hasher> {
    use std::os::unix::fs::FileExt;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < len {
        let want = (len - done).min(buffer.len() as u64) as usize;
        file.read_exact_at(&mut buffer[..want], offset + done)
            .context("cannot read it")?;
        hasher.update(&buffer[..want]);
        done += want as u64;
    }
    Ok(hasher)
}

/// Writes the compiled component and its trailer atomically (a temporary
/// file, then a rename), so a concurrent start never reads half an artifact.
fn store(component: &Component, artifact: &Path) -> Result<()> {
    let dir = artifact.parent().context("the cache path has no folder")?;
    let mut bytes = component.serialize().map_err(|e| anyhow!("{e:?}"))?;
    let crc = crc32fast::hash(&bytes);
    let length = bytes.len() as u64;
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(MAGIC);
    let temporary = dir.join(format!(
        ".{}.tmp{}",
        artifact
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact"),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, artifact)
        .with_context(|| format!("cannot write {}", artifact.display()))?;
    Ok(())
}

/// Whether `path` (a folder to cache in, created if `create`, or an artifact)
/// belongs to this user and no one else can write it.
fn trusted(path: &Path, create: bool) -> Result<()> {
    if create && !path.exists() {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        // Whatever the umask: the folder is this user's alone.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    let metadata = std::fs::symlink_metadata(path).context("cannot read its metadata")?;
    // The owner of /proc/self is this process's effective user.
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if me.is_some_and(|me| metadata.uid() != me) {
        bail!("it belongs to user {} , not to this user", metadata.uid());
    }
    if metadata.mode() & 0o022 != 0 {
        bail!(
            "others can write it (mode {:o}); make it writable by its owner only",
            metadata.mode() & 0o777
        );
    }
    if create && !metadata.is_dir() {
        bail!("it is not a folder");
    }
    if !create && !metadata.is_file() {
        bail!("it is not a regular file");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: the preamble alone.
    const EMPTY_COMPONENT: &[u8] = &[0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    fn engine() -> Engine {
        crate::runtime::engine().unwrap()
    }

    fn artifacts(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn artifacts_are_named_by_sha256_and_loaded_without_rewriting() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        load(&engine(), Digested::new(EMPTY_COMPONENT), Some(&cache)).unwrap();
        let written = artifacts(&cache);
        assert_eq!(written.len(), 1, "{written:?}");
        let name = written[0].file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name.len(), "component-.cwasm".len() + 64, "{name}");
        let named = |bytes| artifact_name(&engine(), &Digested::new(bytes).sha256);
        assert_eq!(name, named(EMPTY_COMPONENT));
        assert_ne!(name, named(b"\0asm\x0d\0\x01\0 other"));
        let before = std::fs::metadata(&written[0]).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        load(&engine(), Digested::new(EMPTY_COMPONENT), Some(&cache)).unwrap();
        assert_eq!(
            std::fs::metadata(&written[0]).unwrap().modified().unwrap(),
            before,
            "the second start loaded the artifact"
        );
        assert!(verify(&written[0]).is_ok());
    }

    #[test]
    fn a_truncated_or_flipped_artifact_is_recompiled_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        load(&engine(), Digested::new(EMPTY_COMPONENT), Some(&cache)).unwrap();
        let artifact = artifacts(&cache).remove(0);
        let good = std::fs::read(&artifact).unwrap();
        let mut flipped = good.clone();
        flipped[100] ^= 0x01;
        // The checksum's second half is summed on its own thread.
        let mut flipped_late = good.clone();
        flipped_late[good.len() - TRAILER - 1] ^= 0x80;
        let damaged = [
            ("truncated", good[..good.len() / 2].to_vec()),
            ("flipped", flipped),
            ("flipped in the second half", flipped_late),
            ("trailer cut", good[..good.len() - 3].to_vec()),
        ];
        for (what, bad) in damaged {
            std::fs::write(&artifact, &bad).unwrap();
            assert!(verify(&artifact).is_err(), "{what} passed the check");
            load(&engine(), Digested::new(EMPTY_COMPONENT), Some(&cache)).unwrap();
            assert_eq!(std::fs::read(&artifact).unwrap(), good, "{what}: rewritten");
        }
    }

    #[test]
    fn a_cache_others_can_write_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("shared");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = trusted(&cache, true).unwrap_err();
        assert!(format!("{why:#}").contains("others can write"), "{why:#}");
        // The component still loads (compiled), and nothing is left there to plant over.
        load(&engine(), Digested::new(EMPTY_COMPONENT), Some(&cache)).unwrap();
        assert!(artifacts(&cache).is_empty());
        // An artifact others can write is not loaded either.
        let own = dir.path().join("own");
        load(&engine(), Digested::new(EMPTY_COMPONENT), Some(&own)).unwrap();
        let artifact = artifacts(&own).remove(0);
        std::fs::set_permissions(&artifact, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(verify(&artifact).is_err());
        // And no cache at all still loads.
        load(&engine(), Digested::new(EMPTY_COMPONENT), None).unwrap();
    }
}
