//! systemd's readiness protocol (`sd_notify`, `Type=notify`): one datagram to the socket named
//! by `$NOTIFY_SOCKET` — `READY=1` once everything is bound and serving, `STOPPING=1` when a
//! signal starts the drain. Written here rather than taken from a crate: it is one `sendto`.
//! Without `$NOTIFY_SOCKET` (not under systemd) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd, if it is listening; errors are ignored, as
/// `sd_notify` callers do: readiness is advisory.
pub(crate) fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path, state);
    }
}

/// Sends `state` to the notification socket `path` (`@name`: an abstract socket).
fn notify_to(path: &std::ffi::OsStr, state: &str) {
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (systemd's default for services).
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), path)
    };
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    /// A datagram reaches a listener named by `$NOTIFY_SOCKET`, as systemd's is.
    #[test]
    fn readiness_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("khttpd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        super::notify_to(path.as_os_str(), "READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
