//! Which service binaries a shop runs: the ones next to the running program, built on first use so
//! they are never stale, or those of `PIZZA_SHOP_BIN_DIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Service;
use crate::Stack;

/// How long building the binaries may take (a clean build of three binaries on two cores).
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

/// The directory holding the three binaries, built once per test process (see the module docs).
pub(super) fn binaries() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PIZZA_SHOP_BIN_DIR").map(PathBuf::from) {
            return check(
                &dir,
                "PIZZA_SHOP_BIN_DIR names a directory without it; build it there",
            );
        }
        let exe = std::env::current_exe().map_err(|e| format!("the test's own path: {e}"))?;
        // target/<profile>/deps/<test binary>, or target/<profile>/<binary> for a binary.
        let mut dir = exe
            .parent()
            .ok_or("the test binary has no directory")?
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("no profile directory above the test binary")?
            .to_owned();
        let target = dir.parent().ok_or("no target directory")?.to_path_buf();
        let mut args = vec![
            "build",
            "--locked",
            "-p",
            "pizza-kitchen",
            "-p",
            "pizza-delivery",
            "-p",
            "pizza-order",
            "--bins",
        ];
        match profile.as_str() {
            "debug" => {}
            "release" => args.push("--release"),
            other => args.extend(["--profile", other]),
        }
        let shown = format!("cargo {} (CARGO_TARGET_DIR={})", args.join(" "), target.display());
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut child = Command::new(cargo)
            .args(&args)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(Stack::repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {shown}: {e}"))?;
        let stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut s) = stderr {
                let _ = std::io::Read::read_to_string(&mut s, &mut text);
            }
            text
        });
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < BUILD_LIMIT => std::thread::sleep(Duration::from_millis(200)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{shown} did not finish within {BUILD_LIMIT:?}"));
                }
                Err(e) => return Err(format!("waiting for {shown}: {e}")),
            }
        };
        let output = reader.join().unwrap_or_default();
        if !status.success() {
            return Err(format!("{shown} failed ({status}):\n{output}"));
        }
        eprintln!("shop: {shown} took {:?}", started.elapsed());
        check(&dir, &format!("run {shown}"))
    })
    .clone()
}

/// `dir` if it holds the three binaries, else an error saying which is missing and what to do.
fn check(dir: &Path, hint: &str) -> Result<PathBuf, String> {
    for service in Service::ALL {
        let path = dir.join(service.binary());
        if !path.is_file() {
            return Err(format!("{} is missing: {hint}", path.display()));
        }
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_binaries_is_refused_with_the_file_named() {
        let err = check(Path::new("/nonexistent"), "build them").unwrap_err();
        assert!(
            err.contains("/nonexistent/pizza-kitchen is missing: build them"),
            "{err}"
        );
    }
}
