//! SHADOW of wdk 0.5.0: `nt_success`, `println!`, `wdf::SpinLock`.
#![no_std]
pub const fn nt_success(status: wdk_sys::NTSTATUS) -> bool {
    status >= 0
}
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{ let _ = core::format_args!($($arg)*); }};
}
pub mod wdf {
    use wdk_sys::{NTSTATUS, WDF_OBJECT_ATTRIBUTES, WDFSPINLOCK};
    pub struct SpinLock {
        _lock: WDFSPINLOCK,
    }
    impl SpinLock {
        pub fn create(_attributes: &mut WDF_OBJECT_ATTRIBUTES) -> Result<Self, NTSTATUS> {
            Ok(Self { _lock: core::ptr::null_mut() })
        }
        pub fn acquire(&self) {}
        pub fn release(&self) {}
    }
}
