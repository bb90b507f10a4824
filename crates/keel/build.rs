//! Links keel with its own linker script (see linker.ld for the layout and why).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed={dir}/linker.ld");
    println!("cargo:rustc-link-arg-bin=keel=-T{dir}/linker.ld");
    // keel is linked at a fixed address, not as a position-independent executable.
    println!("cargo:rustc-link-arg-bin=keel=--no-pie");
    println!("cargo:rustc-link-arg-bin=keel=-zmax-page-size=4096");
    println!("cargo:rustc-link-arg-bin=keel=--build-id=none");
}
