//! The flows the daemon serves, read from the flows folder and re-read when
//! a file changes. An invalid new version of a file is reported and the old
//! one keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tracing::{info, warn};

use crate::flow::{Flow, LoadError, duplicate_id, flow_files, load_file};

/// The loaded flows and the files that failed to load.
#[derive(Default)]
struct Loaded {
    /// The last valid version of each file, by file.
    by_file: BTreeMap<PathBuf, Arc<Flow>>,
    /// Each file's modification time and size when it was last read, and
    /// its problems then: an unchanged file is not read again.
    seen: HashMap<PathBuf, (Signature, Option<LoadError>)>,
    /// What serves: flows by id.
    flows: HashMap<String, Arc<Flow>>,
    errors: Vec<LoadError>,
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

/// A file's modification time and size.
type Signature = Option<(std::time::SystemTime, u64)>;

fn signature(file: &Path) -> Signature {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

pub struct Registry {
    dir: PathBuf,
    loaded: RwLock<Loaded>,
}

impl Registry {
    /// Reads the flows folder.
    pub fn load(dir: &Path) -> Self {
        let registry = Self {
            dir: dir.to_path_buf(),
            loaded: RwLock::new(Loaded::default()),
        };
        registry.reload();
        registry
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Flow>> {
        self.read().flows.get(id).cloned()
    }

    /// Every serving flow, by id.
    pub fn all(&self) -> Vec<Arc<Flow>> {
        let mut flows: Vec<_> = self.read().flows.values().cloned().collect();
        flows.sort_by(|a, b| a.id.cmp(&b.id));
        flows
    }

    pub fn errors(&self) -> Vec<LoadError> {
        self.read().errors.clone()
    }

    /// Re-reads the folder and says what changed.
    pub fn reload(&self) -> Changes {
        let (files, mut errors) = flow_files(std::slice::from_ref(&self.dir));
        let mut by_file = BTreeMap::new();
        let mut seen = HashMap::new();
        {
            let old = self.read();
            for file in files {
                let signature = signature(&file);
                if let Some((sig, error)) = old
                    .seen
                    .get(&file)
                    .filter(|(sig, _)| signature.is_some() && *sig == signature)
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
                seen.insert(file.clone(), (signature, None));
                match load_file(&file) {
                    Ok(flow) => {
                        let same = old.by_file.get(&file).filter(|f| f.version == flow.version);
                        by_file.insert(file, same.cloned().unwrap_or_else(|| Arc::new(flow)));
                    }
                    Err(e) => {
                        for line in e.to_string().lines() {
                            warn!(problem = line, "flow file does not load");
                        }
                        if let Some(previous) = old.by_file.get(&file) {
                            warn!(flow = %previous.id, version = %previous.version, "the previous version keeps serving");
                            by_file.insert(file.clone(), previous.clone());
                        }
                        if let Some(entry) = seen.get_mut(&file) {
                            entry.1 = Some(e.clone());
                        }
                        errors.push(e);
                    }
                }
            }
        }
        let mut flows: HashMap<String, Arc<Flow>> = HashMap::new();
        for flow in by_file.values() {
            match flows.get(&flow.id) {
                Some(first) => errors.push(duplicate_id(flow, &first.file)),
                None => {
                    flows.insert(flow.id.clone(), flow.clone());
                }
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        let mut changes = Changes::default();
        for (id, flow) in &flows {
            match loaded.flows.get(id) {
                None => changes.added.push(id.clone()),
                Some(old) if old.version != flow.version => changes.changed.push(id.clone()),
                Some(_) => {}
            }
        }
        for id in loaded.flows.keys() {
            if !flows.contains_key(id) {
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
        if !changes.is_empty() {
            info!(added = ?changes.added, changed = ?changes.changed, removed = ?changes.removed, "flows reloaded");
        }
        *loaded = Loaded {
            by_file,
            seen,
            flows,
            errors,
        };
        changes
    }
}
