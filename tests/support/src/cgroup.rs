//! Cgroups that container engines started by a test leave behind. containerd names one after
//! each ctr namespace, dockerd and podman one after their cgroup parent; they remove the
//! containers' own cgroups but keep these parents, on the machine's real cgroup tree.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Removes the cgroup `name` (a top-level one, with everything below it) from every hierarchy:
/// cgroup v2 (`/sys/fs/cgroup/<name>`) and each v1 controller (`/sys/fs/cgroup/<ctl>/<name>`).
/// A cgroup whose last processes are still exiting (a container killed a moment ago) cannot
/// be removed yet (EBUSY): this retries for up to 10 s, then leaves it.
pub fn remove_cgroup(name: &str) {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return; // never anything but one test-made top-level name
    }
    crate::poll_until(std::time::Duration::from_secs(10), || {
        let mut tops = vec![Path::new(ROOT).join(name)];
        for e in std::fs::read_dir(ROOT).into_iter().flatten().flatten() {
            tops.push(e.path().join(name));
        }
        let tops: Vec<PathBuf> = tops.into_iter().filter(|t| t.is_dir()).collect();
        for top in &tops {
            remove_tree(top);
        }
        tops.iter().all(|t| !t.exists())
    });
}

/// rmdir bottom-up: cgroupfs only allows removing empty cgroups, and their files go with them.
fn remove_tree(dir: &Path) {
    let subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for d in subdirs {
        remove_tree(&d);
    }
    let _ = std::fs::remove_dir(dir);
}
