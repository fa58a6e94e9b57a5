//! Lays the server's code out in the order of `link/text-order.txt`.
//!
//! The kernel maps a binary's code 64 KiB around each page first run, so
//! code a request runs, spread over the whole binary, kept most of its
//! pages resident. Listed first, the functions that ran once the server
//! listened (serving, then stopping), then those only startup ran, lie
//! together. The list is made by `cargo bench --bench text_order --profile
//! dist`; a function not in it (new, renamed, or built by another rustc)
//! is placed after them, as before.
//!
//! Only lld takes the list (rustc's own lld links x86_64 Linux from Rust
//! 1.90, where rustc was built to), so it is given only when a program
//! linked the way this build links, with the list, links.

use std::path::Path;
use std::process::{Command, Stdio};

const LIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/link/text-order.txt");

/// The arguments that give the linker the list, each passed on as is.
const ORDER: [&str; 4] = [
    "-Xlinker",
    concat!(
        "--symbol-ordering-file=",
        env!("CARGO_MANIFEST_DIR"),
        "/link/text-order.txt"
    ),
    "-Xlinker",
    "--no-warn-symbol-ordering",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if !Path::new(LIST).is_file() {
        return;
    }
    println!("cargo:rerun-if-changed={LIST}");
    if links_with_the_list() {
        for arg in ORDER {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}

/// Whether an empty program links with the list, built by this build's
/// rustc for its target with its flags and linker.
fn links_with_the_list() -> bool {
    let (Some(rustc), Some(target), Some(out)) = (
        std::env::var_os("RUSTC"),
        std::env::var_os("TARGET"),
        std::env::var_os("OUT_DIR"),
    ) else {
        return false;
    };
    let out = Path::new(&out);
    let program = out.join("probe.rs");
    if std::fs::write(&program, "fn main() {}\n").is_err() {
        return false;
    }
    let mut probe = Command::new(rustc);
    probe
        .arg(&program)
        .arg("--target")
        .arg(target)
        .arg("-o")
        .arg(out.join("probe"));
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    probe.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut flag = std::ffi::OsString::from("linker=");
        flag.push(linker);
        probe.arg("-C").arg(flag);
    }
    for arg in ORDER {
        probe.arg("-C").arg(format!("link-arg={arg}"));
    }
    probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
