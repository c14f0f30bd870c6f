//! SHADOW of wdk-panic 0.5.0: a panic handler, as the real one (a bugcheck) provides.
#![no_std]
#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
