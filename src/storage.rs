//! `--storage.path`: what the organisation walk learned, kept across
//! restarts.
//!
//! Names, OUs and above all tags take a long time to learn (one
//! `ListTagsForResource` per account at a few requests a second: 35 minutes
//! at 10,000 accounts). Without them every account alert changes its labels
//! after a restart, resolves, fires again and moves between receivers. So
//! the walk's [`Directory`] is written here after each walk and each batch
//! of tags, and read back at start before the first scrape is served.
//!
//! The file is replaced atomically (a temporary file, fsync, rename, fsync
//! of the folder), so a crash leaves the old or the new one, never half of
//! either. A missing file is a first start; a truncated, corrupt or
//! foreign-version one is a warning naming it, and the walk starts afresh:
//! never a crash. So is a file larger than [`MAX_FILE_BYTES`], refused
//! before it is read: a stray 100 MB file must not take a pod over its
//! memory limit.
//!
//! Account names and tags are nobody else's business on the host: the
//! folder is created 0700 and every file 0600, whatever the umask. The
//! temporary file has a name of its own per write and is created
//! exclusively (`O_EXCL`), so it never follows a planted symlink or
//! truncates a file it did not create.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::{Directory, Learned, unix_seconds};

/// The file in `--storage.path`.
pub const FILE: &str = "organization.json";

/// The format this build writes and reads; any other is ignored.
pub const VERSION: u32 = 1;

/// The largest file read back: 32 MiB, about 180,000 accounts with a tag
/// each (100,000 accounts make 17.5 MB).
pub const MAX_FILE_BYTES: u64 = 32 << 20;

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    /// When this file was written (Unix seconds).
    saved_at: f64,
    /// When the names, OUs and states were last learned from a whole walk.
    structure_learned_at: f64,
    /// When tags were last read (the latest batch).
    tags_learned_at: f64,
    /// When the latest whole walk, tags included, succeeded (0 for none;
    /// absent from files of older builds).
    #[serde(default)]
    walked_at: f64,
    directory: Directory,
}

/// What a restored file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub directory: Directory,
    pub learned: Learned,
}

/// A file in the storage folder, which is checked writable at start.
#[derive(Debug, Clone)]
pub struct Storage {
    dir: PathBuf,
    file: String,
}

impl Storage {
    /// Creates the folder if needed and proves it writable; the error is one
    /// line naming the folder.
    pub fn open(dir: &Path) -> Result<Storage, String> {
        let fail = |what: &str, e: std::io::Error| {
            format!("--storage.path {}: {what}: {e}", dir.display())
        };
        create_private_dir(dir).map_err(|e| fail("cannot create the folder", e))?;
        // Created as every file here is: a name of its own, exclusively.
        let probe = dir.join(temporary_name("write-test"));
        create_private_file(&probe).map_err(|e| fail("cannot write in the folder", e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Storage {
            dir: dir.to_owned(),
            file: FILE.to_owned(),
        })
    }

    /// The file of one organisation in the same folder: [`FILE`] for the
    /// only one, `organization-<name>.json` for a named one (names are
    /// letters, digits and `_.-`, so never a path).
    pub fn for_organization(&self, name: Option<&str>) -> Storage {
        Storage {
            dir: self.dir.clone(),
            file: match name {
                Some(name) => format!("organization-{name}.json"),
                None => FILE.to_owned(),
            },
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// The saved walk, or `None` (with a warning naming the file, unless it
    /// simply does not exist yet) when there is none to trust.
    pub fn load(&self) -> Option<Restored> {
        let path = self.path();
        let bytes = match read_bounded(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the saved organisation; walking it afresh");
                return None;
            }
        };
        // The version first, so a newer format is named as such.
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        match serde_json::from_slice::<Version>(&bytes) {
            Ok(v) if v.version != VERSION => {
                tracing::warn!(
                    file = %path.display(),
                    found = v.version,
                    expected = VERSION,
                    "the saved organisation is of another format version; walking it afresh"
                );
                return None;
            }
            _ => {}
        }
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(s) => Some(Restored {
                directory: s.directory,
                learned: Learned {
                    structure: s.structure_learned_at,
                    tags: s.tags_learned_at,
                    walked: s.walked_at,
                },
            }),
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "the saved organisation is damaged (truncated or corrupt); walking it afresh"
                );
                None
            }
        }
    }

    /// Replaces the file atomically with `dir` and when it was learned.
    pub fn save(&self, directory: &Directory, learned: Learned) -> std::io::Result<()> {
        let saved = Saved {
            version: VERSION,
            saved_at: unix_seconds(SystemTime::now()),
            structure_learned_at: learned.structure,
            tags_learned_at: learned.tags,
            walked_at: learned.walked,
            directory: directory.clone(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(temporary_name(&self.file));
        let written = (|| {
            let mut f = create_private_file(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename itself is durable once the folder is synced.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// A name no other write uses: the file's, the process and a counter.
fn temporary_name(file: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{file}.{}.{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates `dir` and its missing parents; the folder itself 0700.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// Creates a new file, 0600, failing if anything (a symlink included)
/// is already there.
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The whole file, unless it is larger than [`MAX_FILE_BYTES`]: then an
/// error, before a byte is read.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{len} bytes, more than the {MAX_FILE_BYTES} a saved organisation may have"
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // Bounded even if the file grows while it is read.
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other("grew past the bound while read"));
    }
    Ok(bytes)
}

/// A restored directory made to fit the tag labels configured now: tags of
/// labels still configured are kept, new labels start unknown.
pub fn fit_to_labels(mut dir: Directory, labels: &[(String, String)]) -> Directory {
    if dir.tag_labels == labels {
        return dir;
    }
    let old = std::mem::take(&mut dir.tag_labels);
    for info in dir.accounts.values_mut() {
        let mut all_kept = info.tags_known;
        let tags = labels
            .iter()
            .map(|l| match old.iter().position(|o| o == l) {
                Some(i) => info.tags.get(i).cloned().unwrap_or_default(),
                None => {
                    all_kept = false;
                    String::new()
                }
            })
            .collect();
        info.tags = tags;
        info.tags_known = all_kept;
    }
    dir.tag_labels = labels.to_vec();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountInfo;

    fn directory() -> Directory {
        let mut d = Directory {
            tag_labels: vec![("tag_team".into(), "team".into())],
            ..Directory::default()
        };
        d.accounts.insert(
            "111111111111".into(),
            AccountInfo {
                name: "payments-prod".into(),
                ou_id: "ou-1".into(),
                ou_path: "Root/Prod".into(),
                tags: vec!["payments".into()],
                state: "ACTIVE".into(),
                tags_known: true,
            },
        );
        d
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "storage-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_saved_walk_comes_back_whole() {
        let s = Storage::open(&dir()).unwrap();
        assert_eq!(s.load(), None, "nothing saved yet");
        let learned = Learned {
            structure: 10.0,
            tags: 20.0,
            walked: 30.0,
        };
        s.save(&directory(), learned).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.directory, directory());
        assert_eq!(r.learned, learned);
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(&s.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[cfg(unix)]
    #[test]
    fn the_folder_and_the_file_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = dir();
        let s = Storage::open(&d).unwrap();
        s.save(&directory(), Learned::default()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&s.path()), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_never_followed() {
        let s = Storage::open(&dir()).unwrap();
        let victim = s.dir.join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        // Whatever name the next write picks, an existing entry there is
        // refused rather than opened: create_new is O_CREAT|O_EXCL.
        let planted = s.dir.join("planted.tmp");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(create_private_file(&planted).is_err());
        s.save(&directory(), Learned::default()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        // Nor by the writability probe of a start: the old fixed name,
        // planted, is neither followed nor in the way.
        std::os::unix::fs::symlink(&victim, s.dir.join(".write-test")).unwrap();
        Storage::open(&s.dir).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }

    #[test]
    fn a_file_over_the_bound_is_refused_before_it_is_read() {
        let s = Storage::open(&dir()).unwrap();
        let f = std::fs::File::create(s.path()).unwrap();
        // Sparse: the size is there without writing 32 MiB.
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let err = read_bounded(&s.path()).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        assert_eq!(s.load(), None);
    }

    #[test]
    fn damaged_and_foreign_files_are_ignored_not_fatal() {
        let s = Storage::open(&dir()).unwrap();
        s.save(&directory(), Learned::default()).unwrap();
        let whole = std::fs::read(s.path()).unwrap();
        let foreign = String::from_utf8(whole.clone()).unwrap().replacen(
            "\"version\":1",
            "\"version\":99",
            1,
        );
        for bad in [
            whole[..whole.len() / 2].to_vec(),
            b"\x00\xffnot json".to_vec(),
            foreign.into_bytes(),
            b"{}".to_vec(),
        ] {
            std::fs::write(s.path(), &bad).unwrap();
            assert_eq!(s.load(), None);
        }
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_a_one_line_error() {
        let file = dir();
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"a file, not a folder").unwrap();
        let err = Storage::open(&file.join("sub")).unwrap_err();
        assert!(err.starts_with("--storage.path "), "{err}");
        assert!(err.contains("cannot create the folder"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn restored_tags_fit_the_labels_configured_now() {
        let labels = vec![
            ("tag_cost_center".to_owned(), "cost-center".to_owned()),
            ("tag_team".to_owned(), "team".to_owned()),
        ];
        let fitted = fit_to_labels(directory(), &labels);
        let info = &fitted.accounts["111111111111"];
        assert_eq!(info.tags, ["", "payments"]);
        assert!(!info.tags_known, "cost-center was never read");
        let same = fit_to_labels(directory(), &directory().tag_labels);
        assert!(same.accounts["111111111111"].tags_known);
    }
}
