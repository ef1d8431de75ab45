//! Builds the web client (`web/`, TypeScript + Vite) into `web/dist`, which
//! the node embeds (rust-embed). It runs `npm ci` when `node_modules` is
//! missing or older than the lock file, and `npm run build` when a source
//! is newer than the last build. Without npm the node still builds: it
//! embeds a page that says how to get the client, and `cargo:warning`s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn newest(path: &Path) -> Option<SystemTime> {
    let md = std::fs::metadata(path).ok()?;
    if md.is_file() {
        return md.modified().ok();
    }
    let mut best = None;
    for e in std::fs::read_dir(path).ok()?.flatten() {
        let n = e.file_name();
        if n == "node_modules"
            || n == "dist"
            || n == "tests"
            || n.to_string_lossy().starts_with('.')
        {
            continue;
        }
        best = best.max(newest(&e.path()));
    }
    best
}

fn run(dir: &Path, args: &[&str]) -> bool {
    match Command::new("npm").args(args).current_dir(dir).status() {
        Ok(s) => s.success(),
        Err(_) => false,
    }
}

fn fallback(dist: &Path, why: &str) {
    let _ = std::fs::create_dir_all(dist);
    if !dist.join("index.html").exists() {
        let _ = std::fs::write(
            dist.join("index.html"),
            format!(
                "<!doctype html><meta charset=utf-8><title>AgentOS</title><p>The AgentOS web client was not built into this binary ({why}). Install Node.js 20 and npm, then rebuild (`cargo build`).</p>"
            ),
        );
    }
    println!("cargo:warning=web client not built: {why}");
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let web = manifest.join("../../web");
    let dist = web.join("dist");
    for p in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=AGENTOS_SKIP_WEB_BUILD");
    if !web.join("package.json").exists() {
        return fallback(&dist, "web/package.json is missing");
    }
    if std::env::var_os("AGENTOS_SKIP_WEB_BUILD").is_some() {
        return fallback(&dist, "AGENTOS_SKIP_WEB_BUILD is set");
    }
    // Several builds (check, debug, release) may run this at once.
    let lock = match std::fs::File::create(web.join(".build.lock")) {
        Ok(f) => f,
        Err(e) => return fallback(&dist, &format!("cannot lock web/: {e}")),
    };
    let _ = lock.lock();
    let stamp = dist.join(".stamp");
    let lock_file = web.join("package-lock.json");
    let installed = web.join("node_modules/.package-lock.json");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if (mtime(&installed).is_none() || mtime(&installed) < mtime(&lock_file))
        && !run(&web, &["ci", "--no-audit", "--no-fund", "--loglevel=error"])
    {
        return fallback(&dist, "`npm ci` failed (is npm installed?)");
    }
    let src = newest(&web);
    if mtime(&stamp).is_some() && mtime(&stamp) >= src {
        return;
    }
    if !run(&web, &["run", "build", "--silent"]) {
        return fallback(&dist, "`npm run build` failed");
    }
    let _ = std::fs::write(&stamp, b"");
}
