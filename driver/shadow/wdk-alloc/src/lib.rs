//! SHADOW of wdk-alloc 0.4.2.
#![no_std]
use core::alloc::{GlobalAlloc, Layout};
pub struct WdkAllocator;
unsafe impl GlobalAlloc for WdkAllocator {
    unsafe fn alloc(&self, _: Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}
