//! khttp-wsk: Winsock Kernel declarations for khttp.sys.
//!
//! wdk-sys does not bind `wsk.h`, so the structures, function-pointer types, constants and the
//! four `netio` imports the driver needs are declared here by hand, in C layout, with the names
//! the header uses. IRPs, MDLs and other kernel objects are opaque pointers, so this crate has no
//! dependencies and compiles (and its layout assertions run) on any 64-bit host.
//!
//! Field orders follow the ddi documentation (`ns-wsk-_wsk_*`); types and constant values follow
//! the public-domain ReactOS `wsk.h`. Both are unverified against the WDK until the Windows CI
//! job compares this crate with bindgen output of the real header (docs/driver-facts.md, "WSK
//! declarations").
//!
//! Unsafe code: the extern block in [`imports`]; everything else is declarations.

#![no_std]
#![forbid(unsafe_op_in_unsafe_fn)]
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    clippy::use_self,
    reason = "the C names of wsk.h"
)]

use core::ffi::c_void;

/// `NTSTATUS`.
pub type NTSTATUS = i32;
/// An `IRP*` (opaque here; the driver passes wdk-sys's `PIRP` cast to this).
pub type PIRP = *mut c_void;
/// An `MDL*` (opaque here).
pub type PMDL = *mut c_void;
/// `WSK_CLIENT`: opaque provider-side client object.
pub type PWSK_CLIENT = *mut c_void;

/// A `GUID`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GUID {
    /// First 32 bits.
    pub Data1: u32,
    /// Next 16 bits.
    pub Data2: u16,
    /// Next 16 bits.
    pub Data3: u16,
    /// Last 64 bits.
    pub Data4: [u8; 8],
}

/// `NPI_WSK_INTERFACE_ID` = {2227E803-8D8B-11D4-ABAD-009027719E09}, from third-party code and
/// unverified (docs/driver-facts.md, "WSK declarations").
pub const NPI_WSK_INTERFACE_ID: GUID = GUID {
    Data1: 0x2227_E803,
    Data2: 0x8D8B,
    Data3: 0x11D4,
    Data4: [0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71, 0x9E, 0x09],
};

/// `MAKE_WSK_VERSION(Mj, Mn)`.
#[must_use]
pub const fn MAKE_WSK_VERSION(major: u8, minor: u8) -> u16 {
    ((major as u16) << 8) | minor as u16
}

/// The WSK version khttp asks for: 1.0.
pub const WSK_VERSION_1_0: u16 = MAKE_WSK_VERSION(1, 0);

// Waits.
/// `WSK_NO_WAIT`.
pub const WSK_NO_WAIT: u32 = 0;
/// `WSK_INFINITE_WAIT`.
pub const WSK_INFINITE_WAIT: u32 = 0xFFFF_FFFF;

// Socket kinds (`Flags` of `WskSocket`).
/// `WSK_FLAG_BASIC_SOCKET`.
pub const WSK_FLAG_BASIC_SOCKET: u32 = 0x0000_0000;
/// `WSK_FLAG_LISTEN_SOCKET`.
pub const WSK_FLAG_LISTEN_SOCKET: u32 = 0x0000_0001;
/// `WSK_FLAG_CONNECTION_SOCKET`.
pub const WSK_FLAG_CONNECTION_SOCKET: u32 = 0x0000_0002;
/// `WSK_FLAG_DATAGRAM_SOCKET`.
pub const WSK_FLAG_DATAGRAM_SOCKET: u32 = 0x0000_0004;
/// `WSK_FLAG_STREAM_SOCKET`.
pub const WSK_FLAG_STREAM_SOCKET: u32 = 0x0000_0008;

// Call and event flags.
/// `WSK_FLAG_ABORTIVE` (WskDisconnect).
pub const WSK_FLAG_ABORTIVE: u32 = 0x0000_0001;
/// `WSK_FLAG_NODELAY` (WskSend).
pub const WSK_FLAG_NODELAY: u32 = 0x0000_0002;
/// `WSK_FLAG_WAITALL` (WskReceive).
pub const WSK_FLAG_WAITALL: u32 = 0x0000_0002;
/// `WSK_FLAG_RELEASE_ASAP` (event callbacks).
pub const WSK_FLAG_RELEASE_ASAP: u32 = 0x0000_0002;
/// `WSK_FLAG_ENTIRE_MESSAGE`.
pub const WSK_FLAG_ENTIRE_MESSAGE: u32 = 0x0000_0004;
/// `WSK_FLAG_AT_DISPATCH_LEVEL`.
pub const WSK_FLAG_AT_DISPATCH_LEVEL: u32 = 0x0000_0008;

/// `WSK_SET_STATIC_EVENT_CALLBACKS` (WskControlClient).
pub const WSK_SET_STATIC_EVENT_CALLBACKS: u32 = 7;

// Event masks.
/// `WSK_EVENT_ACCEPT`.
pub const WSK_EVENT_ACCEPT: u32 = 0x0000_0200;
/// `WSK_EVENT_RECEIVE`.
pub const WSK_EVENT_RECEIVE: u32 = 0x0000_0040;
/// `WSK_EVENT_DISCONNECT`.
pub const WSK_EVENT_DISCONNECT: u32 = 0x0000_0080;
/// `WSK_EVENT_SEND_BACKLOG`.
pub const WSK_EVENT_SEND_BACKLOG: u32 = 0x0000_0010;
/// `WSK_EVENT_DISABLE`.
pub const WSK_EVENT_DISABLE: u32 = 0x8000_0000;

// Options and addresses (Windows values).
/// `WSK_SO_BASE` (\[U\], inferred).
pub const WSK_SO_BASE: u32 = 0x4000;
/// `SO_WSK_EVENT_CALLBACK`.
pub const SO_WSK_EVENT_CALLBACK: u32 = WSK_SO_BASE + 2;
/// `SOL_SOCKET`.
pub const SOL_SOCKET: u32 = 0xFFFF;
/// `SO_EXCLUSIVEADDRUSE` = `~SO_REUSEADDR`.
pub const SO_EXCLUSIVEADDRUSE: u32 = !0x0004u32;
/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6` on Windows (23, not Linux's 10).
pub const AF_INET6: u16 = 23;
/// `SOCK_STREAM`.
pub const SOCK_STREAM: u16 = 1;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u32 = 6;
/// `IPPROTO_IPV6`.
pub const IPPROTO_IPV6: u32 = 41;
/// `IPV6_V6ONLY`.
pub const IPV6_V6ONLY: u32 = 27;

/// `WSK_CONTROL_SOCKET_TYPE`.
pub type WSK_CONTROL_SOCKET_TYPE = i32;
/// `WskSetOption`.
pub const WskSetOption: WSK_CONTROL_SOCKET_TYPE = 0;
/// `WskGetOption`.
pub const WskGetOption: WSK_CONTROL_SOCKET_TYPE = 1;
/// `WskIoctl`.
pub const WskIoctl: WSK_CONTROL_SOCKET_TYPE = 2;

/// `SOCKADDR` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SOCKADDR {
    /// Address family.
    pub sa_family: u16,
    /// Address data.
    pub sa_data: [u8; 14],
}

/// `SOCKADDR_IN` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SOCKADDR_IN {
    /// `AF_INET`.
    pub sin_family: u16,
    /// Port, network byte order.
    pub sin_port: u16,
    /// Address, network byte order.
    pub sin_addr: [u8; 4],
    /// Zero.
    pub sin_zero: [u8; 8],
}

/// `SOCKADDR_IN6` (28 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SOCKADDR_IN6 {
    /// `AF_INET6`.
    pub sin6_family: u16,
    /// Port, network byte order.
    pub sin6_port: u16,
    /// Flow information.
    pub sin6_flowinfo: u32,
    /// Address, network byte order.
    pub sin6_addr: [u8; 16],
    /// Scope id.
    pub sin6_scope_id: u32,
}

/// `WSK_BUF`: an MDL chain, a byte offset into the first MDL, a length.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WSK_BUF {
    /// First MDL of the chain.
    pub Mdl: PMDL,
    /// Offset into the first MDL (`ULONG`).
    pub Offset: u32,
    /// Bytes described.
    pub Length: usize,
}

/// `WSK_DATA_INDICATION`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_DATA_INDICATION {
    /// Next indication.
    pub Next: *mut WSK_DATA_INDICATION,
    /// The data.
    pub Buffer: WSK_BUF,
}

/// `WSK_EVENT_CALLBACK_CONTROL`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_EVENT_CALLBACK_CONTROL {
    /// `&NPI_WSK_INTERFACE_ID`.
    pub NpiId: *const GUID,
    /// `WSK_EVENT_*` bits.
    pub EventMask: u32,
}

/// `WSK_SOCKET`: the provider's socket object; `Dispatch` is cast by socket kind.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_SOCKET {
    /// A `WSK_PROVIDER_LISTEN_DISPATCH` or `WSK_PROVIDER_CONNECTION_DISPATCH`, by kind.
    pub Dispatch: *const c_void,
}
/// `PWSK_SOCKET`.
pub type PWSK_SOCKET = *mut WSK_SOCKET;

/// `PFN_WSK_CLIENT_EVENT`.
pub type PFN_WSK_CLIENT_EVENT = unsafe extern "system" fn(
    ClientContext: *mut c_void,
    EventType: u32,
    Information: *mut c_void,
    InformationLength: usize,
) -> NTSTATUS;

/// `WSK_CLIENT_DISPATCH`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_CLIENT_DISPATCH {
    /// [`WSK_VERSION_1_0`].
    pub Version: u16,
    /// Zero.
    pub Reserved: u16,
    /// Client event callback; none for khttp.
    pub WskClientEvent: Option<PFN_WSK_CLIENT_EVENT>,
}

/// `WSK_CLIENT_NPI`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_CLIENT_NPI {
    /// Client context.
    pub ClientContext: *mut c_void,
    /// The client dispatch table (static).
    pub Dispatch: *const WSK_CLIENT_DISPATCH,
}

/// `WSK_REGISTRATION`: opaque to the client (24 bytes).
#[repr(C)]
#[derive(Debug)]
pub struct WSK_REGISTRATION {
    /// Reserved.
    pub ReservedRegistrationState: u64,
    /// Reserved.
    pub ReservedRegistrationContext: *mut c_void,
    /// Reserved (`KSPIN_LOCK`).
    pub ReservedRegistrationLock: usize,
}

/// `PFN_WSK_SOCKET`.
pub type PFN_WSK_SOCKET = unsafe extern "system" fn(
    Client: PWSK_CLIENT,
    AddressFamily: u16,
    SocketType: u16,
    Protocol: u32,
    Flags: u32,
    SocketContext: *mut c_void,
    Dispatch: *const c_void,
    OwningProcess: *mut c_void,
    OwningThread: *mut c_void,
    SecurityDescriptor: *mut c_void,
    Irp: PIRP,
) -> NTSTATUS;

/// `PFN_WSK_SOCKET_CONNECT` (declared for layout; khttp does not call it).
pub type PFN_WSK_SOCKET_CONNECT = unsafe extern "system" fn(
    Client: PWSK_CLIENT,
    SocketType: u16,
    Protocol: u32,
    LocalAddress: *mut SOCKADDR,
    RemoteAddress: *mut SOCKADDR,
    Flags: u32,
    SocketContext: *mut c_void,
    Dispatch: *const c_void,
    OwningProcess: *mut c_void,
    OwningThread: *mut c_void,
    SecurityDescriptor: *mut c_void,
    Irp: PIRP,
) -> NTSTATUS;

/// `PFN_WSK_CONTROL_CLIENT`.
pub type PFN_WSK_CONTROL_CLIENT = unsafe extern "system" fn(
    Client: PWSK_CLIENT,
    ControlCode: u32,
    InputSize: usize,
    InputBuffer: *mut c_void,
    OutputSize: usize,
    OutputBuffer: *mut c_void,
    OutputSizeReturned: *mut usize,
    Irp: PIRP,
) -> NTSTATUS;

/// `WSK_PROVIDER_DISPATCH`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_PROVIDER_DISPATCH {
    /// Provider version.
    pub Version: u16,
    /// Reserved.
    pub Reserved: u16,
    /// `WskSocket`.
    pub WskSocket: Option<PFN_WSK_SOCKET>,
    /// `WskSocketConnect`.
    pub WskSocketConnect: Option<PFN_WSK_SOCKET_CONNECT>,
    /// `WskControlClient`.
    pub WskControlClient: Option<PFN_WSK_CONTROL_CLIENT>,
    /// `WskGetAddressInfo` (unused).
    pub WskGetAddressInfo: *const c_void,
    /// `WskFreeAddressInfo` (unused).
    pub WskFreeAddressInfo: *const c_void,
    /// `WskGetNameInfo` (unused).
    pub WskGetNameInfo: *const c_void,
}

/// `WSK_PROVIDER_NPI`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_PROVIDER_NPI {
    /// The client object to pass back.
    pub Client: PWSK_CLIENT,
    /// The provider dispatch table.
    pub Dispatch: *const WSK_PROVIDER_DISPATCH,
}

/// `PFN_WSK_CONTROL_SOCKET`.
pub type PFN_WSK_CONTROL_SOCKET = unsafe extern "system" fn(
    Socket: PWSK_SOCKET,
    RequestType: WSK_CONTROL_SOCKET_TYPE,
    ControlCode: u32,
    Level: u32,
    InputSize: usize,
    InputBuffer: *mut c_void,
    OutputSize: usize,
    OutputBuffer: *mut c_void,
    OutputSizeReturned: *mut usize,
    Irp: PIRP,
) -> NTSTATUS;
/// `PFN_WSK_CLOSE_SOCKET`.
pub type PFN_WSK_CLOSE_SOCKET =
    unsafe extern "system" fn(Socket: PWSK_SOCKET, Irp: PIRP) -> NTSTATUS;
/// `PFN_WSK_BIND`.
pub type PFN_WSK_BIND = unsafe extern "system" fn(
    Socket: PWSK_SOCKET,
    LocalAddress: *mut SOCKADDR,
    Flags: u32,
    Irp: PIRP,
) -> NTSTATUS;
/// `PFN_WSK_ACCEPT`.
pub type PFN_WSK_ACCEPT = unsafe extern "system" fn(
    ListenSocket: PWSK_SOCKET,
    Flags: u32,
    AcceptSocketContext: *mut c_void,
    AcceptSocketDispatch: *const WSK_CLIENT_CONNECTION_DISPATCH,
    LocalAddress: *mut SOCKADDR,
    RemoteAddress: *mut SOCKADDR,
    Irp: PIRP,
) -> NTSTATUS;
/// `PFN_WSK_INSPECT_COMPLETE` (unused).
pub type PFN_WSK_INSPECT_COMPLETE = *const c_void;
/// `PFN_WSK_GET_LOCAL_ADDRESS` / `PFN_WSK_GET_REMOTE_ADDRESS`.
pub type PFN_WSK_GET_ADDRESS =
    unsafe extern "system" fn(Socket: PWSK_SOCKET, Address: *mut SOCKADDR, Irp: PIRP) -> NTSTATUS;
/// `PFN_WSK_CONNECT` (unused).
pub type PFN_WSK_CONNECT = *const c_void;
/// `PFN_WSK_SEND` / `PFN_WSK_RECEIVE`.
pub type PFN_WSK_SEND_RECEIVE = unsafe extern "system" fn(
    Socket: PWSK_SOCKET,
    Buffer: *mut WSK_BUF,
    Flags: u32,
    Irp: PIRP,
) -> NTSTATUS;
/// `PFN_WSK_DISCONNECT`.
pub type PFN_WSK_DISCONNECT = unsafe extern "system" fn(
    Socket: PWSK_SOCKET,
    Buffer: *mut WSK_BUF,
    Flags: u32,
    Irp: PIRP,
) -> NTSTATUS;
/// `PFN_WSK_RELEASE_DATA_INDICATION_LIST`.
pub type PFN_WSK_RELEASE = unsafe extern "system" fn(
    Socket: PWSK_SOCKET,
    DataIndication: *mut WSK_DATA_INDICATION,
) -> NTSTATUS;

/// `WSK_PROVIDER_BASIC_DISPATCH`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_PROVIDER_BASIC_DISPATCH {
    /// `WskControlSocket`.
    pub WskControlSocket: Option<PFN_WSK_CONTROL_SOCKET>,
    /// `WskCloseSocket`.
    pub WskCloseSocket: Option<PFN_WSK_CLOSE_SOCKET>,
}

/// `WSK_PROVIDER_LISTEN_DISPATCH`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_PROVIDER_LISTEN_DISPATCH {
    /// Control and close.
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    /// `WskBind` (binding a listening socket starts listening).
    pub WskBind: Option<PFN_WSK_BIND>,
    /// `WskAccept`.
    pub WskAccept: Option<PFN_WSK_ACCEPT>,
    /// `WskInspectComplete`.
    pub WskInspectComplete: PFN_WSK_INSPECT_COMPLETE,
    /// `WskGetLocalAddress`.
    pub WskGetLocalAddress: Option<PFN_WSK_GET_ADDRESS>,
}

/// `WSK_PROVIDER_CONNECTION_DISPATCH`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_PROVIDER_CONNECTION_DISPATCH {
    /// Control and close.
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    /// `WskBind`.
    pub WskBind: Option<PFN_WSK_BIND>,
    /// `WskConnect`.
    pub WskConnect: PFN_WSK_CONNECT,
    /// `WskGetLocalAddress`.
    pub WskGetLocalAddress: Option<PFN_WSK_GET_ADDRESS>,
    /// `WskGetRemoteAddress`.
    pub WskGetRemoteAddress: Option<PFN_WSK_GET_ADDRESS>,
    /// `WskSend`.
    pub WskSend: Option<PFN_WSK_SEND_RECEIVE>,
    /// `WskReceive`.
    pub WskReceive: Option<PFN_WSK_SEND_RECEIVE>,
    /// `WskDisconnect`.
    pub WskDisconnect: Option<PFN_WSK_DISCONNECT>,
    /// `WskRelease`.
    pub WskRelease: Option<PFN_WSK_RELEASE>,
    /// `WskConnectEx` (Windows 10 RS2+; unused).
    pub WskConnectEx: *const c_void,
    /// `WskSendEx` (unused).
    pub WskSendEx: *const c_void,
    /// `WskReceiveEx` (unused).
    pub WskReceiveEx: *const c_void,
}

/// `PFN_WSK_ACCEPT_EVENT`.
pub type PFN_WSK_ACCEPT_EVENT = unsafe extern "system" fn(
    SocketContext: *mut c_void,
    Flags: u32,
    LocalAddress: *mut SOCKADDR,
    RemoteAddress: *mut SOCKADDR,
    AcceptSocket: PWSK_SOCKET,
    AcceptSocketContext: *mut *mut c_void,
    AcceptSocketDispatch: *mut *const WSK_CLIENT_CONNECTION_DISPATCH,
) -> NTSTATUS;

/// `WSK_CLIENT_LISTEN_DISPATCH`.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_CLIENT_LISTEN_DISPATCH {
    /// `WskAcceptEvent`.
    pub WskAcceptEvent: Option<PFN_WSK_ACCEPT_EVENT>,
    /// `WskInspectEvent` (unused).
    pub WskInspectEvent: *const c_void,
    /// `WskAbortEvent` (unused).
    pub WskAbortEvent: *const c_void,
}

/// `PFN_WSK_DISCONNECT_EVENT`: `WskDisconnectEvent(SocketContext, Flags)`.
pub type PFN_WSK_DISCONNECT_EVENT =
    unsafe extern "system" fn(SocketContext: *mut c_void, Flags: u32) -> NTSTATUS;

/// `WSK_CLIENT_CONNECTION_DISPATCH`. khttp receives with its own IRPs (the pull model) and
/// takes only the disconnect event, to see a client leave while no receive is pending.
#[repr(C)]
#[derive(Debug)]
pub struct WSK_CLIENT_CONNECTION_DISPATCH {
    /// `WskReceiveEvent` (unused).
    pub WskReceiveEvent: *const c_void,
    /// `WskDisconnectEvent`.
    pub WskDisconnectEvent: Option<PFN_WSK_DISCONNECT_EVENT>,
    /// `WskSendBacklogEvent`.
    pub WskSendBacklogEvent: *const c_void,
}

#[allow(unsafe_code, reason = "the netio imports")]
pub mod imports {
    //! The four `netio` functions. Linked only on Windows, so dependents build elsewhere.

    use super::{NTSTATUS, WSK_CLIENT_NPI, WSK_PROVIDER_NPI, WSK_REGISTRATION};

    #[cfg_attr(windows, link(name = "netio"))]
    unsafe extern "system" {
        /// `WskRegister` (PASSIVE_LEVEL).
        pub fn WskRegister(
            WskClientNpi: *const WSK_CLIENT_NPI,
            WskRegistration: *mut WSK_REGISTRATION,
        ) -> NTSTATUS;
        /// `WskDeregister` (PASSIVE_LEVEL; blocks until every NPI is released and socket closed).
        pub fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION);
        /// `WskCaptureProviderNPI` (PASSIVE_LEVEL unless `WSK_NO_WAIT`).
        pub fn WskCaptureProviderNPI(
            WskRegistration: *mut WSK_REGISTRATION,
            WaitTimeout: u32,
            WskProviderNpi: *mut WSK_PROVIDER_NPI,
        ) -> NTSTATUS;
        /// `WskReleaseProviderNPI` (<= DISPATCH_LEVEL).
        pub fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION);
    }
}

/// Layout facts for x64, checked at compile time on 64-bit targets.
#[cfg(target_pointer_width = "64")]
mod layout {
    use core::mem::{offset_of, size_of};

    use super::{
        SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, WSK_BUF, WSK_CLIENT_CONNECTION_DISPATCH,
        WSK_CLIENT_DISPATCH, WSK_CLIENT_LISTEN_DISPATCH, WSK_CLIENT_NPI, WSK_DATA_INDICATION,
        WSK_EVENT_CALLBACK_CONTROL, WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH,
        WSK_PROVIDER_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION,
        WSK_SOCKET,
    };

    const _: () = assert!(size_of::<WSK_CLIENT_DISPATCH>() == 16);
    const _: () = assert!(offset_of!(WSK_CLIENT_DISPATCH, WskClientEvent) == 8);
    const _: () = assert!(size_of::<WSK_CLIENT_NPI>() == 16);
    const _: () = assert!(size_of::<WSK_REGISTRATION>() == 24);
    const _: () = assert!(size_of::<WSK_PROVIDER_NPI>() == 16);
    const _: () = assert!(size_of::<WSK_PROVIDER_DISPATCH>() == 56);
    const _: () = assert!(offset_of!(WSK_PROVIDER_DISPATCH, WskSocket) == 8);
    const _: () = assert!(offset_of!(WSK_PROVIDER_DISPATCH, WskControlClient) == 24);
    const _: () = assert!(size_of::<WSK_SOCKET>() == 8);
    const _: () = assert!(size_of::<WSK_PROVIDER_BASIC_DISPATCH>() == 16);
    const _: () = assert!(size_of::<WSK_PROVIDER_LISTEN_DISPATCH>() == 48);
    const _: () = assert!(offset_of!(WSK_PROVIDER_LISTEN_DISPATCH, WskBind) == 16);
    const _: () = assert!(size_of::<WSK_PROVIDER_CONNECTION_DISPATCH>() == 104);
    const _: () = assert!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskSend) == 48);
    const _: () = assert!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskReceive) == 56);
    const _: () = assert!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskDisconnect) == 64);
    const _: () = assert!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskRelease) == 72);
    const _: () = assert!(size_of::<WSK_CLIENT_LISTEN_DISPATCH>() == 24);
    const _: () = assert!(size_of::<WSK_CLIENT_CONNECTION_DISPATCH>() == 24);
    const _: () = assert!(size_of::<WSK_BUF>() == 24);
    const _: () = assert!(offset_of!(WSK_BUF, Offset) == 8);
    const _: () = assert!(offset_of!(WSK_BUF, Length) == 16);
    const _: () = assert!(size_of::<WSK_DATA_INDICATION>() == 32);
    const _: () = assert!(size_of::<WSK_EVENT_CALLBACK_CONTROL>() == 16);
    const _: () = assert!(size_of::<SOCKADDR>() == 16);
    const _: () = assert!(size_of::<SOCKADDR_IN>() == 16);
    const _: () = assert!(size_of::<SOCKADDR_IN6>() == 28);
    const _: () = assert!(offset_of!(SOCKADDR_IN6, sin6_addr) == 8);
    const _: () = assert!(offset_of!(SOCKADDR_IN6, sin6_scope_id) == 24);
}

#[cfg(test)]
mod tests {
    use super::{
        MAKE_WSK_VERSION, NPI_WSK_INTERFACE_ID, SO_EXCLUSIVEADDRUSE, SO_WSK_EVENT_CALLBACK,
        WSK_VERSION_1_0,
    };

    #[test]
    fn constants() {
        assert_eq!(WSK_VERSION_1_0, 0x0100);
        assert_eq!(MAKE_WSK_VERSION(2, 3), 0x0203);
        assert_eq!(SO_EXCLUSIVEADDRUSE, 0xFFFF_FFFB);
        assert_eq!(SO_WSK_EVENT_CALLBACK, 0x4002);
        assert_eq!(NPI_WSK_INTERFACE_ID.Data4[7], 0x09);
    }
}
