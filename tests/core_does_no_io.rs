//! The core crate's promise: no sockets, threads, files or clock reads. This test reads the
//! core's own source (outside its `#[cfg(test)]` modules) and fails if any of those APIs appear,
//! so the promise cannot rot silently.

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "std::net",
    "std::thread",
    "std::fs",
    "std::process",
    "std::env",
    "TcpStream",
    "UdpSocket",
    "File::",
    "sleep(",
    "unsafe ",
];

/// The part of a source file before its unit-test module.
fn non_test_part(source: &str) -> &str {
    match source.find("#[cfg(test)]") {
        Some(at) => &source[..at],
        None => source,
    }
}

#[test]
fn core_sources_use_no_io_threads_or_clocks() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_some_and(|e| e == "rs") {
                let source = fs::read_to_string(&path).expect("source is UTF-8");
                let code = non_test_part(&source);
                for (n, line) in code.lines().enumerate() {
                    let line = line.trim_start();
                    if line.starts_with("//") {
                        continue;
                    }
                    for word in FORBIDDEN {
                        assert!(
                            !line.contains(word),
                            "{}:{}: the sans-IO core must not use `{word}`: {line}",
                            path.display(),
                            n + 1
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} source files found");
}

#[test]
fn the_crate_forbids_unsafe_code() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs is readable");
    assert!(lib.contains("#![forbid(unsafe_code)]"));
    assert!(lib.contains("#![warn(missing_docs)]"));
}
