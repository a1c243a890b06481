//! What the daemon serves from a folder of YAML files — flows, and
//! integrations — read at start and re-read when a file changes. What
//! serves is never unloaded by a problem reading it:
//! an invalid new version of a file is reported and the old one keeps
//! serving; a file that cannot be read, or a folder that cannot be listed
//! (its permissions changed, it was moved away), keeps its flows serving,
//! is logged, and is read again at each rescan until it can be. A new file
//! whose flow id is already served is the duplicate; the flow serving
//! keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tracing::{info, warn};

use crate::flow::{Flow, Links, LoadError, flow_files};

/// What a registry loads: one per file, known by an id unique across the
/// folder.
pub trait Item: Send + Sync + Sized + 'static {
    /// What it is, for messages: `flow`, `integration`.
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn file(&self) -> &str;
    fn version(&self) -> &str;
    fn load(path: &Path) -> Result<Self, LoadError>;
    /// The error for an item whose id the file `first` already has.
    fn duplicate(&self, first: &str) -> LoadError;
}

impl Item for Flow {
    const KIND: &'static str = "flow";
    fn id(&self) -> &str {
        &self.id
    }
    fn file(&self) -> &str {
        &self.file
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn load(path: &Path) -> Result<Self, LoadError> {
        crate::flow::load_file(path)
    }
    fn duplicate(&self, first: &str) -> LoadError {
        crate::flow::duplicate_id(self, first)
    }
}

/// The loaded items and the files that failed to load.
struct Loaded<T> {
    /// The last valid version of each file, by file.
    by_file: BTreeMap<PathBuf, Arc<T>>,
    /// Each file's signature when it was last read, and its problems then:
    /// an unchanged file is not read again. A file that could not be read
    /// at all has no entry (it is read again at each rescan).
    seen: HashMap<PathBuf, (Signature, Option<LoadError>)>,
    /// What serves, by id.
    flows: HashMap<String, Arc<T>>,
    errors: Vec<LoadError>,
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Self {
            by_file: BTreeMap::new(),
            seen: HashMap::new(),
            flows: HashMap::new(),
            errors: Vec::new(),
        }
    }
}

/// What a reload changed, by flow id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// What says a file changed: its inode, size, modification time and change
/// time (which moves on a rename, a `chmod` or a write, and cannot be set
/// back, so a file rewritten within the same second with the same size, or
/// made readable again, is read again).
type Signature = (u64, u64, std::time::SystemTime, i64, i64);

fn signature(file: &Path) -> Option<Signature> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).ok()?;
    Some((
        meta.ino(),
        meta.len(),
        meta.modified().ok()?,
        meta.ctime(),
        meta.ctime_nsec(),
    ))
}

pub struct Registry<T: Item = Flow> {
    dir: PathBuf,
    links: Links,
    loaded: RwLock<Loaded<T>>,
    /// The last problem listing the folder, logged once until it changes.
    folder_error: Mutex<Option<String>>,
}

impl<T: Item> Registry<T> {
    /// Reads the folder.
    pub fn load(dir: &Path, links: Links) -> Self {
        let registry = Self {
            dir: dir.to_path_buf(),
            links,
            loaded: RwLock::new(Loaded::default()),
            folder_error: Mutex::new(None),
        };
        registry.reload();
        registry
    }

    /// A registry of a folder that does not exist (yet): empty, and read
    /// at the first rescan that finds it.
    pub fn empty(dir: &Path, links: Links) -> Self {
        Self {
            dir: dir.to_path_buf(),
            links,
            loaded: RwLock::new(Loaded::default()),
            folder_error: Mutex::new(None),
        }
    }

    /// Reads the folder again if it exists (a folder that was never there
    /// is not a problem; one that was read and is now gone is).
    pub fn reload_if_present(&self) -> Changes {
        if self.dir.exists() || !self.read().by_file.is_empty() {
            return self.reload();
        }
        Changes::default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded<T>> {
        self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        self.read().flows.get(id).cloned()
    }

    /// Everything serving, by id.
    pub fn all(&self) -> Vec<Arc<T>> {
        let mut flows: Vec<_> = self.read().flows.values().cloned().collect();
        flows.sort_by(|a, b| a.id().cmp(b.id()));
        flows
    }

    pub fn errors(&self) -> Vec<LoadError> {
        self.read().errors.clone()
    }

    /// Re-reads the folder and says what changed.
    pub fn reload(&self) -> Changes {
        if let Err(e) = std::fs::read_dir(&self.dir) {
            return self.folder_unreadable(e.to_string());
        }
        let (files, mut errors) = flow_files(std::slice::from_ref(&self.dir), self.links);
        if let Some(e) = errors.iter().find(|e| Path::new(&e.file) == self.dir) {
            return self.folder_unreadable(e.to_string());
        }
        if let Some(was) = self
            .folder_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            info!(kind = T::KIND, dir = %self.dir.display(), was, "the folder can be read again");
        }
        let mut by_file = BTreeMap::new();
        let mut seen = HashMap::new();
        let serving = {
            let old = self.read();
            for file in files {
                let signature = signature(&file);
                if let Some((sig, error)) = old
                    .seen
                    .get(&file)
                    .filter(|(sig, _)| signature.as_ref() == Some(sig))
                {
                    if let Some(flow) = old.by_file.get(&file) {
                        by_file.insert(file.clone(), flow.clone());
                    }
                    if let Some(e) = error {
                        errors.push(e.clone());
                    }
                    seen.insert(file, (*sig, error.clone()));
                    continue;
                }
                match T::load(&file) {
                    Ok(flow) => {
                        let same = old
                            .by_file
                            .get(&file)
                            .filter(|f| f.version() == flow.version());
                        by_file.insert(
                            file.clone(),
                            same.cloned().unwrap_or_else(|| Arc::new(flow)),
                        );
                        if let Some(sig) = signature {
                            seen.insert(file, (sig, None));
                        }
                    }
                    Err(e) => {
                        for line in e.to_string().lines() {
                            warn!(kind = T::KIND, problem = line, "a file does not load");
                        }
                        if let Some(previous) = old.by_file.get(&file) {
                            warn!(kind = T::KIND, id = %previous.id(), version = %previous.version(), "the previous version keeps serving");
                            by_file.insert(file.clone(), previous.clone());
                        }
                        // A file that could not be read is read again at
                        // the next rescan, whatever its signature.
                        let unreadable = std::fs::File::open(&file).is_err();
                        if let (Some(sig), false) = (signature, unreadable) {
                            seen.insert(file.clone(), (sig, Some(e.clone())));
                        }
                        errors.push(e);
                    }
                }
            }
            (old.flows.clone(), old.errors.clone())
        };
        let (serving, reported) = serving;
        let (flows, duplicates) = serving_flows(&by_file, &serving);
        for e in duplicates {
            if !reported.contains(&e) {
                warn!(kind = T::KIND, problem = %e, "a file has the id of one already served; it is not loaded");
            }
            errors.push(e);
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        let changes = changes(&loaded.flows, &flows);
        if !changes.is_empty() {
            info!(kind = T::KIND, added = ?changes.added, changed = ?changes.changed, removed = ?changes.removed, "reloaded");
        }
        *loaded = Loaded {
            by_file,
            seen,
            flows,
            errors,
        };
        changes
    }

    /// The folder cannot be listed: everything keeps serving as it was; the
    /// problem is logged (once until it changes) and shown with the flows'
    /// errors.
    fn folder_unreadable(&self, error: String) -> Changes {
        let mut last = self.folder_error.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(error.as_str()) {
            warn!(kind = T::KIND, dir = %self.dir.display(), error, "cannot read the folder; what was loaded before keeps serving, and the folder is read again at each rescan");
            *last = Some(error.clone());
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        let dir = self.dir.display().to_string();
        loaded.errors.retain(|e| e.file != dir);
        loaded.errors.push(LoadError::one(
            &dir,
            weir_nodes::Pos::new(1, 1),
            format!(
                "cannot read the {}s folder: {error}; the {}s loaded before keep serving",
                T::KIND,
                T::KIND
            ),
        ));
        Changes::default()
    }
}

/// The flows that serve, by id: each file's flow, except that of two files
/// with the same id, the one serving keeps serving (the newcomer is the
/// duplicate); among new ones, the first by file name.
type Serving<T> = HashMap<String, Arc<T>>;

fn serving_flows<T: Item>(
    by_file: &BTreeMap<PathBuf, Arc<T>>,
    serving: &Serving<T>,
) -> (Serving<T>, Vec<LoadError>) {
    let is_serving = |flow: &T| {
        serving
            .get(flow.id())
            .is_some_and(|f| f.file() == flow.file())
    };
    let mut ordered: Vec<&Arc<T>> = by_file.values().collect();
    // Stable: files in name order, the serving ones first.
    ordered.sort_by_key(|f| !is_serving(f));
    let mut flows: Serving<T> = HashMap::new();
    let mut duplicates = Vec::new();
    for flow in ordered {
        match flows.get(flow.id()) {
            Some(first) => duplicates.push(flow.duplicate(first.file())),
            None => {
                flows.insert(flow.id().to_owned(), flow.clone());
            }
        }
    }
    (flows, duplicates)
}

fn changes<T: Item>(old: &Serving<T>, new: &Serving<T>) -> Changes {
    let mut changes = Changes::default();
    for (id, flow) in new {
        match old.get(id) {
            None => changes.added.push(id.clone()),
            Some(old) if old.version() != flow.version() => changes.changed.push(id.clone()),
            Some(_) => {}
        }
    }
    for id in old.keys() {
        if !new.contains_key(id) {
            changes.removed.push(id.clone());
        }
    }
    for list in [
        &mut changes.added,
        &mut changes.changed,
        &mut changes.removed,
    ] {
        list.sort();
    }
    changes
}
