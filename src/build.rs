//! Build script: records the git commit the binary is built from, for
//! `sluice --version`. Without git or a `.git` folder (a source tarball)
//! the commit reads "unknown".

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SLUICE_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (branch switch, detached
    // checkout), the branch's ref file, and packed refs. In a worktree
    // `.git` is a file naming the real git folder.
    let dirs = git_dirs();
    let reference = dirs
        .first()
        .and_then(|d| std::fs::read_to_string(d.join("HEAD")).ok())
        .and_then(|head| head.trim().strip_prefix("ref: ").map(str::to_string));
    for dir in &dirs {
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Some(reference) = &reference {
            watched.push(dir.join(reference));
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The git folder of this checkout first and, for a worktree, then the
/// common one (where branch refs live).
fn git_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    let dot_git = Path::new(".git");
    if dot_git.is_dir() {
        dirs.push(dot_git.to_path_buf());
    } else if let Ok(text) = std::fs::read_to_string(dot_git) {
        if let Some(dir) = text.trim().strip_prefix("gitdir: ") {
            let dir = Path::new(dir).to_path_buf();
            let common = std::fs::read_to_string(dir.join("commondir"));
            dirs.push(dir.clone());
            if let Ok(common) = common {
                dirs.push(dir.join(common.trim()));
            }
        }
    }
    dirs
}
