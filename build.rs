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
//! own lld: x86_64-unknown-linux-gnu, from Rust 1.90.

use std::process::Command;

fn main() {
    const LIST: &str = "link/text-order.txt";
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || !rustc_links_with_lld() {
        return;
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={manifest}/{LIST}");
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc is 1.90 or later, which links x86_64 Linux with lld.
fn rustc_links_with_lld() -> bool {
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
