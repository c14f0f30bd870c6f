//! Configures the KMDF binary build: linker arguments, library paths and cfgs
//! (`wdk_build::configure_wdk_binary_build`, docs.rs/wdk-build).
//! Fails with `StaticCrtNotEnabled` unless `.cargo/config.toml`'s crt-static applies.
//!
//! With the `wsk-layout-check` feature it also runs bindgen on the WDK's `wsk.h`, reusing
//! wdk-build's configuration (`bindgen::Builder::wdk_default`, from wdk-build's `BuilderExt`),
//! into `$OUT_DIR/wsk_bindings.rs`,
//! which `src/wsk_check.rs` compares with khttp-wsk at compile time.

fn main() -> Result<(), wdk_build::ConfigError> {
    #[cfg(feature = "wsk-layout-check")]
    wsk_bindings::generate();
    wdk_build::configure_wdk_binary_build()
}

#[cfg(feature = "wsk-layout-check")]
mod wsk_bindings {
    use wdk_build::{ApiSubset, BuilderExt, Config};

    /// Headers whose items wdk-sys already binds (from its base header: ntifs.h, ntddk.h, wdm.h
    /// and what they include). A header missed here only yields a local copy that shadows
    /// wdk-sys's item through the glob import; it cannot leave a name undefined.
    const KERNEL_HEADERS: &str = r".*[/\\](wdm|ntddk|ntifs|ntdef|ntstatus|ntstrsafe|guiddef|basetsd|bugcodes|ntiologc|ntimage|ketypes|winnt|specstrings|sal|driverspecs|kernelspecs|excpt|vadefs|crtdefs|stddef|stdarg|_mingw\w*|wdf|khttp-kcompat)\.h";

    /// Generates the WSK items only; kernel types come from wdk-sys (`use wdk_sys::*`), so an
    /// `IRP` here is wdk-sys's `IRP`. `INET_PORT_RESERVATION_INSTANCE` is opaque: bindgen cannot
    /// lay it out in C mode (PR #450's failure).
    pub(super) fn generate() {
        let config = Config::from_env_auto().expect("WDK configuration");
        let mut header = config
            .bindgen_header_contents([ApiSubset::Base])
            .expect("wdk-build's base header contents");
        header.push_str("\n#include <wsk.h>\n");
        let bindings = bindgen::Builder::wdk_default(&config)
            .expect("wdk-build's bindgen defaults")
            .header_contents("khttp-wsk-check.h", &header)
            // Everything the WSK items refer to is generated (issue #9, finding 9: with
            // recursion off, the output named PFN_WSK_*, SOCKADDR_IN6_LH, NPIID... without
            // defining them), except what the kernel headers define: wdk-sys has those, and
            // the glob import below supplies them. bindgen anchors these regexes.
            .allowlist_recursively(true)
            .allowlist_type("_?WSK_.*|P?WSK_.*|PFN_WSK_.*|_?SOCKADDR(_IN6?)?|P?SOCKADDR(_IN6?)?")
            .allowlist_var("WSK_.*|NPI_WSK_INTERFACE_ID")
            .blocklist_file(KERNEL_HEADERS)
            .opaque_type("_?INET_PORT_RESERVATION_INSTANCE")
            .raw_line("use wdk_sys::*;")
            .generate()
            .expect("bindgen of wsk.h");
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
        bindings
            .write_to_file(out.join("wsk_bindings.rs"))
            .expect("write wsk_bindings.rs");
    }
}
