//! SHADOW of wdk-build 0.6.0 for the Linux type-check only: does nothing.
#[derive(Debug)]
pub struct ConfigError;
pub fn configure_wdk_binary_build() -> Result<(), ConfigError> {
    Ok(())
}
