//! The set of cgroup directories under the hierarchy roots, kept current
//! with inotify: `mkdir`/`rmdir` in cgroupfs raise `IN_CREATE`/`IN_DELETE` on
//! the parent directory (cgroupfs does not update a directory's mtime), so a
//! scrape costs one read of the event queue instead of a walk of the whole
//! tree. A full walk happens at start, after a queue overflow, and on every
//! refresh when inotify cannot be used (unavailable, or the watch limit
//! `fs.inotify.max_user_watches` reached: the reason is kept in
//! [`Tree::degraded`]). Files the reader wants to hear about get watches of
//! their own ([`Tree::watch_file`]: `IN_MODIFY` on a limit written by the
//! runtime, or a `memory.events` change the kernel notifies), so it re-reads
//! them only when they change ([`Tree::take_modified`]). Directories are not
//! watched for `IN_MODIFY`: that would put every read of every file in them
//! on the kernel's slow notification path. Not here: what is read in a
//! cgroup (`super`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// Deepest nesting followed below a root.
const MAX_DEPTH: usize = 32;

/// Directories that are never cgroups of interest: systemd mount units and
/// CRI-O's conmon scopes.
fn skipped(name: &str) -> bool {
    name.ends_with(".mount") || name.starts_with("crio-conmon")
}

fn join(rel: &str, name: &str) -> String {
    if rel == "/" {
        format!("/{name}")
    } else {
        format!("{rel}/{name}")
    }
}

fn dir_of(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

/// Cgroup paths (`/` and `/a/b`, relative to the hierarchy roots), the union
/// over all roots.
pub struct Tree {
    roots: Vec<PathBuf>,
    ino: Option<Inotify>,
    wds: HashMap<WatchDescriptor, (usize, String)>,
    /// File watches: wd → (cgroup path, file name).
    files: HashMap<WatchDescriptor, (String, String)>,
    paths: BTreeSet<String>,
    rescan: bool,
    buf: Vec<u8>,
    modified: Vec<(String, String)>,
    recreated: Vec<String>,
    /// Full walks done (start, overflow, degraded mode).
    pub walks: u64,
    /// Why the tree is walked on every refresh instead of watched.
    pub degraded: Option<String>,
}

impl Tree {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Tree {
            roots,
            ino: None,
            wds: HashMap::new(),
            files: HashMap::new(),
            paths: BTreeSet::new(),
            rescan: true,
            buf: vec![0; 64 * 1024],
            modified: Vec::new(),
            recreated: Vec::new(),
            walks: 0,
            degraded: None,
        }
    }

    pub fn paths(&self) -> &BTreeSet<String> {
        &self.paths
    }

    /// Files written since the last call, as (cgroup path, file name). Only
    /// meaningful while the tree is watched (`degraded` is `None`) and no
    /// full walk happened in between (`walks` unchanged).
    pub fn take_modified(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.modified)
    }

    /// Cgroups made again under a path already known (removed and made
    /// between two refreshes): whatever was held for the old one is stale.
    pub fn take_recreated(&mut self) -> Vec<String> {
        std::mem::take(&mut self.recreated)
    }

    /// Inotify watches held (directories and files).
    pub fn watches(&self) -> usize {
        self.wds.len() + self.files.len()
    }

    /// Watches one file of cgroup `rel` for writes; false when it cannot be
    /// watched (no inotify, no such file, watch limit): then the caller must
    /// read it every time. Watches last until the file goes or the next full
    /// walk (`walks` changes).
    pub fn watch_file(&mut self, path: &Path, rel: &str, name: &str) -> bool {
        let Some(ino) = self.ino.as_mut() else {
            return false;
        };
        match ino
            .watches()
            .add(path, WatchMask::MODIFY | WatchMask::DONT_FOLLOW)
        {
            Ok(wd) => {
                self.files.insert(wd, (rel.to_string(), name.to_string()));
                true
            }
            Err(_) => false,
        }
    }

    /// Brings the set up to date; true when it may have changed.
    pub fn refresh(&mut self) -> bool {
        if self.rescan || self.degraded.is_some() {
            self.full_walk();
            return true;
        }
        let mut changed = false;
        loop {
            let Some(ino) = self.ino.as_mut() else {
                self.rescan = true;
                return self.refresh();
            };
            let events: Vec<(EventMask, WatchDescriptor, Option<String>)> =
                match ino.read_events(&mut self.buf) {
                    Ok(evs) => evs
                        .map(|e| {
                            (
                                e.mask,
                                e.wd,
                                e.name.map(|n| n.to_string_lossy().into_owned()),
                            )
                        })
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cgroup inotify read failed; rescanning");
                        self.full_walk();
                        return true;
                    }
                };
            if events.is_empty() {
                break;
            }
            for (mask, wd, name) in events {
                if mask.contains(EventMask::Q_OVERFLOW) {
                    self.full_walk();
                    return true;
                }
                if mask.contains(EventMask::IGNORED) {
                    self.wds.remove(&wd);
                    self.files.remove(&wd);
                    continue;
                }
                if let Some(file) = self.files.get(&wd) {
                    if mask.contains(EventMask::MODIFY) {
                        self.modified.push(file.clone());
                    }
                    continue;
                }
                let (Some((root, rel)), Some(name)) = (self.wds.get(&wd), name) else {
                    continue;
                };
                if !mask.contains(EventMask::ISDIR) {
                    continue;
                }
                let (root, rel) = (*root, rel.clone());
                if skipped(&name) {
                    continue;
                }
                let child = join(&rel, &name);
                if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                    changed = true;
                    if !self.paths.insert(child.clone()) {
                        // it and all below it are new
                        let prefix = format!("{child}/");
                        self.recreated.push(child.clone());
                        self.recreated.extend(
                            self.paths
                                .range(prefix.clone()..)
                                .take_while(|p| p.starts_with(&prefix))
                                .cloned(),
                        );
                    }
                    self.walk(root, &child, child.matches('/').count());
                } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
                    changed = true;
                    self.forget(&child);
                }
            }
            if self.degraded.is_some() {
                self.full_walk();
                return true;
            }
        }
        changed
    }

    /// Drops `rel` and everything below it, unless another root still has it.
    fn forget(&mut self, rel: &str) {
        let prefix = format!("{rel}/");
        let gone: Vec<String> = self
            .paths
            .range(rel.to_string()..)
            .take_while(|p| *p == rel || p.starts_with(&prefix))
            .filter(|p| !self.roots.iter().any(|r| dir_of(r, p).is_dir()))
            .cloned()
            .collect();
        for p in gone {
            self.paths.remove(&p);
        }
    }

    fn full_walk(&mut self) {
        self.walks += 1;
        self.rescan = false;
        self.paths.clear();
        self.paths.insert("/".to_string());
        self.wds.clear();
        self.files.clear();
        self.modified.clear();
        self.recreated.clear();
        // A new instance drops every old watch at once.
        self.ino = None;
        if self.degraded.is_none() {
            match Inotify::init() {
                Ok(i) => self.ino = Some(i),
                Err(e) => self.degraded = Some(format!("inotify unavailable: {e}")),
            }
        }
        for r in 0..self.roots.len() {
            self.walk(r, "/", 0);
        }
    }

    fn walk(&mut self, root: usize, rel: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let dir = dir_of(&self.roots[root], rel);
        if let Some(ino) = self.ino.as_mut() {
            let mask = WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::MOVED_FROM
                | WatchMask::MOVED_TO
                | WatchMask::ONLYDIR
                | WatchMask::DONT_FOLLOW;
            match ino.watches().add(&dir, mask) {
                Ok(wd) => {
                    self.wds.insert(wd, (root, rel.to_string()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => {
                    if self.degraded.is_none() {
                        tracing::warn!(error = %e, dir = %dir.display(),
                            "cannot watch cgroup directory; walking the hierarchy every scrape instead");
                        self.degraded = Some(format!("inotify watch on {}: {e}", dir.display()));
                    }
                    self.ino = None;
                    self.wds.clear();
                }
            }
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if skipped(&name) {
                continue;
            }
            let child = join(rel, &name);
            self.paths.insert(child.clone());
            self.walk(root, &child, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_follows_mkdir_and_rmdir_without_walking() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("x.mount")).unwrap();
        let mut t = Tree::new(vec![root.clone()]);
        assert!(t.refresh());
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(t.paths(), &want(&["/", "/a", "/a/b"]));
        assert!(!t.refresh(), "nothing changed");
        std::fs::write(root.join("a/b/memory.max"), "1").unwrap();
        std::fs::write(root.join("a/b/memory.current"), "1").unwrap();
        assert!(t.watch_file(&root.join("a/b/memory.max"), "/a/b", "memory.max"));
        assert!(!t.watch_file(&root.join("a/b/nope"), "/a/b", "nope"));
        std::fs::write(root.join("a/b/memory.max"), "2").unwrap();
        std::fs::write(root.join("a/b/memory.current"), "2").unwrap();
        t.refresh();
        assert_eq!(
            t.take_modified(),
            vec![("/a/b".to_string(), "memory.max".to_string())],
            "only watched files are reported"
        );
        std::fs::create_dir_all(root.join("a/c/d")).unwrap();
        std::fs::write(root.join("a/file"), "x").unwrap();
        assert!(t.refresh());
        assert_eq!(t.paths(), &want(&["/", "/a", "/a/b", "/a/c", "/a/c/d"]));
        // below a directory created after the last refresh, too
        std::fs::create_dir_all(root.join("a/c/d/e")).unwrap();
        std::fs::remove_dir_all(root.join("a/b")).unwrap();
        std::fs::remove_dir_all(root.join("a/c/d")).unwrap();
        std::fs::create_dir_all(root.join("a/c/d/e")).unwrap();
        assert!(t.refresh());
        assert_eq!(
            t.take_recreated(),
            vec!["/a/c/d".to_string(), "/a/c/d/e".to_string()]
        );
        assert_eq!(t.paths(), &want(&["/", "/a", "/a/c", "/a/c/d", "/a/c/d/e"]));
        std::fs::remove_dir_all(root.join("a")).unwrap();
        t.refresh();
        assert_eq!(t.paths(), &want(&["/"]));
        assert_eq!(t.walks, 1, "one walk, then events only");
        assert!(t.degraded.is_none());
    }
}
