//! Configures the KMDF binary build: linker arguments, library paths and cfgs (DRIVER-NOTES §1.3).
//! Fails with `StaticCrtNotEnabled` unless `.cargo/config.toml`'s crt-static applies.

fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}
