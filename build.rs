//! Lays the server's code out in the order of `link/text-order.txt`.
//!
//! The kernel maps a binary's code 64 KiB around each page first run, so
//! code a request runs, spread over the whole binary, kept most of its
//! pages resident. Listed first, the functions a review runs and then those
//! startup runs lie together. The list is made by `cargo bench --bench
//! text_order --profile dist`; a function not in it (new, or renamed) is
//! placed after them, as before.
//!
//! Only lld takes the list, so it is given only where rustc links with its
//! own lld: x86_64-unknown-linux-gnu from Rust 1.90, with no other linker
//! configured or chosen in the flags.

use std::path::Path;
use std::process::Command;

fn main() {
    const LIST: &str = "link/text-order.txt";
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let list = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(LIST);
    if target != "x86_64-unknown-linux-gnu" || !links_with_rust_lld() || !list.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Whether the link is rustc's own lld: its default for x86_64 Linux from
/// Rust 1.90, unless a linker is configured or the flags choose one.
fn links_with_rust_lld() -> bool {
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let chosen = ["linker", "link-self-contained", "fuse-ld"];
    if std::env::var_os("RUSTC_LINKER").is_some() || chosen.iter().any(|f| flags.contains(f)) {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    matches!((parts.next(), parts.next()), (Some(1), Some(minor)) if minor >= 90)
}
