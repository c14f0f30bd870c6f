//! Compile-time comparison of khttp-wsk's hand-written declarations with bindgen output of the
//! real `wsk.h` (docs/driver-facts.md, "WSK declarations"). Built only with `--features
//! wsk-layout-check`, by the Windows CI job; a mismatch is a compile error naming the item.

#![allow(
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    clippy::all,
    reason = "generated bindings"
)]

#[allow(unsafe_code, reason = "bindgen's generated code for wsk.h")]
mod real {
    include!(concat!(env!("OUT_DIR"), "/wsk_bindings.rs"));
}

use core::mem::{offset_of, size_of};

macro_rules! same_size {
    ($($t:ident),* $(,)?) => {$(
        const _: () = assert!(size_of::<real::$t>() == size_of::<khttp_wsk::$t>(), stringify!($t));
    )*};
}

macro_rules! same_offset {
    ($($t:ident . $f:ident),* $(,)?) => {$(
        const _: () = assert!(
            offset_of!(real::$t, $f) == offset_of!(khttp_wsk::$t, $f),
            concat!(stringify!($t), ".", stringify!($f))
        );
    )*};
}

macro_rules! same_value {
    ($($c:ident),* $(,)?) => {$(
        const _: () = assert!(real::$c as u64 == khttp_wsk::$c as u64, stringify!($c));
    )*};
}

same_size!(
    WSK_CLIENT_DISPATCH,
    WSK_CLIENT_NPI,
    WSK_REGISTRATION,
    WSK_PROVIDER_NPI,
    WSK_PROVIDER_DISPATCH,
    WSK_SOCKET,
    WSK_PROVIDER_BASIC_DISPATCH,
    WSK_PROVIDER_LISTEN_DISPATCH,
    WSK_PROVIDER_CONNECTION_DISPATCH,
    WSK_CLIENT_LISTEN_DISPATCH,
    WSK_CLIENT_CONNECTION_DISPATCH,
    WSK_BUF,
    WSK_DATA_INDICATION,
    WSK_EVENT_CALLBACK_CONTROL,
);

same_offset!(
    WSK_CLIENT_DISPATCH.WskClientEvent,
    WSK_PROVIDER_DISPATCH.WskSocket,
    WSK_PROVIDER_DISPATCH.WskControlClient,
    WSK_PROVIDER_LISTEN_DISPATCH.WskBind,
    WSK_PROVIDER_LISTEN_DISPATCH.WskAccept,
    WSK_PROVIDER_CONNECTION_DISPATCH.WskSend,
    WSK_PROVIDER_CONNECTION_DISPATCH.WskReceive,
    WSK_PROVIDER_CONNECTION_DISPATCH.WskDisconnect,
    WSK_PROVIDER_CONNECTION_DISPATCH.WskRelease,
    WSK_BUF.Offset,
    WSK_BUF.Length,
    WSK_EVENT_CALLBACK_CONTROL.EventMask,
);

same_value!(
    WSK_NO_WAIT,
    WSK_INFINITE_WAIT,
    WSK_FLAG_LISTEN_SOCKET,
    WSK_FLAG_CONNECTION_SOCKET,
    WSK_FLAG_ABORTIVE,
    WSK_FLAG_NODELAY,
    WSK_SET_STATIC_EVENT_CALLBACKS,
    WSK_EVENT_ACCEPT,
    WSK_EVENT_RECEIVE,
    WSK_EVENT_DISCONNECT,
    WSK_EVENT_DISABLE,
);

// NPI_WSK_INTERFACE_ID is an `extern const GUID` in wsk.h (bindgen emits an extern static, which
// a const assertion cannot read): compare it on the first Windows build (docs/driver-facts.md,
// "Not yet verified on Windows").
