//! Sessions: one per handle (file object), made when the device is opened, with its opener's
//! identity; attach and detach; and the handle's cleanup, which detaches it and answers what
//! it took.

#![allow(
    unsafe_code,
    reason = "WDF queues, requests and file objects through the C ABI; a lock-guarded global"
)]

use alloc::sync::Arc;
use alloc::vec::Vec;

use khttp_engine::acl::Sid;

use khttp_engine::ctl::{Caller, attach};
use khttp_engine::limits::{MAX_APP_ATTACHES, MAX_APP_SESSIONS, MAX_APP_SESSIONS_PER_USER};
use khttp_engine::{CtlError, Holder};
use khttp_proto::reply::AttachRow;

use wdk_sys::{
    STATUS_CANCELLED, STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_QUOTA_EXCEEDED, STATUS_SUCCESS, WDFDEVICE, WDFFILEOBJECT, WDFQUEUE, WDFREQUEST,
};

use crate::global::{Global, global};
use crate::ioctl::{complete, writer};

use super::answer::release_held_of;
use super::receive::retrieve_parked;
use super::{Apps, NO_TAKER, Session, abandon, apps};

/// `EvtDeviceFileCreate` (PASSIVE_LEVEL, the opener's thread): a session for the handle.
pub(super) extern "C" fn on_file_create(
    _device: WDFDEVICE,
    request: WDFREQUEST,
    file: WDFFILEOBJECT,
) {
    let Some(a) = apps() else {
        return complete(request, STATUS_DEVICE_NOT_READY, 0);
    };
    // SAFETY: no preconditions; the opener's process.
    let pid = unsafe { wdk_sys::ntddk::PsGetCurrentProcessId() } as usize;
    // SAFETY: PASSIVE_LEVEL, in EvtDeviceFileCreate.
    let identity = match unsafe { crate::token::opener() } {
        Ok(id) => Arc::try_new(id).map_err(|_| STATUS_INSUFFICIENT_RESOURCES),
        Err(status) => Err(status),
    };
    let identity = match identity {
        Ok(id) => id,
        Err(status) => {
            wdk::println!(
                "khttp: could not read the token of process {pid} opening the application device: {status:#x}"
            );
            return complete(request, status, 0);
        }
    };
    let holder = Holder {
        pid: u32::try_from(pid).unwrap_or(u32::MAX),
        uid: identity.user().and_then(Sid::rid).unwrap_or(u32::MAX),
    };
    let counted = !identity.is_administrator();
    let user = identity.user().copied();
    let status = a.with(|st| {
        // Handles of users other than administrators are bounded, in all and per user, as
        // khttpd's connections are (issue #22, defect 10: each holds its opener's token).
        if counted {
            let mut total = 0usize;
            let mut mine = 0usize;
            for s in st
                .sessions
                .iter()
                .filter(|s| !s.identity.is_administrator())
            {
                total = total.saturating_add(1);
                if s.identity.user().copied() == user {
                    mine = mine.saturating_add(1);
                }
            }
            if total >= MAX_APP_SESSIONS || mine >= MAX_APP_SESSIONS_PER_USER {
                return STATUS_QUOTA_EXCEEDED;
            }
        }
        if st.sessions.try_reserve(1).is_err() {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        st.sessions_opened = st.sessions_opened.wrapping_add(1);
        let id = st.sessions_opened;
        st.sessions.push(Session {
            file,
            id,
            holder,
            identity,
            attached: Vec::new(),
        });
        STATUS_SUCCESS
    });
    if status == STATUS_QUOTA_EXCEEDED {
        wdk::println!(
            "khttp: refused an application handle of process {pid}: too many handles of its user"
        );
    }
    complete(request, status, 0);
}

/// `EvtFileCleanup` (PASSIVE_LEVEL): the handle closed. Its parked receives are cancelled, it is
/// detached, and the requests it took, or that wait where no application is left, get 503.
pub(super) extern "C" fn on_file_cleanup(file: WDFFILEOBJECT) {
    let Some(a) = apps() else { return };
    // SAFETY: our live manual queue; this handle's file object.
    while let Some(r) = unsafe { retrieve_parked(a.receives, Some(file)) } {
        complete(r, STATUS_CANCELLED, 0);
    }
    release_held_of(a, file);
    let session = a.with(|st| {
        let i = st.sessions.iter().position(|s| s.file == file)?;
        Some(st.sessions.swap_remove(i))
    });
    let Some(session) = session else { return };
    let orphaned = detach_retrying(&session, &session.attached);
    abandon(a, Some(session.id), &orphaned);
}

/// [`detach_from`] at cleanup, where giving up would leave queues counting a handle that is
/// gone (issue #22, defect 8: a failed detach was ignored): retried for a second, at
/// PASSIVE_LEVEL, while memory is short; then logged.
pub(super) fn detach_retrying(session: &Session, queues: &[u32]) -> Vec<u32> {
    for attempt in 0..10u32 {
        match detach_from(session, queues) {
            Ok(orphaned) => return orphaned,
            Err(e) if attempt == 9 => {
                wdk::println!(
                    "khttp: could not detach a closed handle (process {}) from {} queue(s): {}",
                    session.holder.pid,
                    queues.len(),
                    e.message()
                );
            }
            // Cleanup and the IOCTL path run at PASSIVE_LEVEL.
            Err(_) => crate::irp::sleep_ms(100),
        }
    }
    Vec::new()
}

/// `EvtFileClose`: the session went at cleanup.
pub(super) extern "C" fn on_file_close(_file: WDFFILEOBJECT) {}

/// `EvtIoCanceledOnQueue`: a parked receive whose thread or handle went.
pub(super) extern "C" fn on_canceled_on_queue(_queue: WDFQUEUE, request: WDFREQUEST) {
    complete(request, STATUS_CANCELLED, 0);
}

/// Detaches `session` from `queues` (one site change, published under the writer lock);
/// returns those left with no application.
pub(super) fn detach_from(session: &Session, queues: &[u32]) -> Result<Vec<u32>, CtlError> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let g = global().ok_or(CtlError::NotFound)?;
    writer(g).change(|next| next.detach_queues(queues, session.holder))
}

/// `QueueAttach` for the handle `file`: the engine's rule, on a clone of the site, published.
pub(super) fn attach_session(
    g: &Global,
    a: &Apps,
    file: WDFFILEOBJECT,
    name: &str,
    prefixes: &[&str],
) -> Result<Vec<u8>, CtlError> {
    // Room to record the queue first, so that a published attach is never one the session
    // does not know of (issue #22, defect 8: such a phantom was never detached).
    let (holder, identity) = a
        .with(|st| {
            let s = st.sessions.iter_mut().find(|s| s.file == file)?;
            if s.attached.len() >= MAX_APP_ATTACHES {
                return Some(Err(CtlError::TooManySessions));
            }
            s.attached.try_reserve(1).ok()?;
            Some(Ok((s.holder, Arc::clone(&s.identity))))
        })
        .ok_or(CtlError::NotFound)??;
    let queue =
        writer(g).change(|next| attach(next, Caller::Token(&identity), holder, name, prefixes));
    let queue = queue.inspect_err(|e| {
        wdk::println!(
            "khttp: refused an application attach (process {}) to {name}: {}",
            holder.pid,
            e.message()
        );
    })?;
    let recorded = a.with(|st| {
        let s = st.sessions.iter_mut().find(|s| s.file == file)?;
        // Reserved above; another attach of the handle (the queue is parallel) may have used
        // the room meanwhile, so reserve again.
        s.attached.try_reserve(1).ok()?;
        s.attached.push(queue);
        Some(())
    });
    if recorded.is_none() {
        // The handle closed meanwhile (its cleanup detached what it knew), or no memory:
        // undo the attach, so that no queue counts a handle that is not there.
        let gone = Session {
            file,
            id: NO_TAKER,
            holder,
            identity,
            attached: Vec::new(),
        };
        let orphaned = detach_retrying(&gone, &[queue]);
        abandon(a, None, &orphaned);
        return Err(CtlError::OutOfMemory);
    }
    let mut out = Vec::new();
    khttp_proto::write_rows(&mut out, [AttachRow { queue }]).map_err(|_| CtlError::OutOfMemory)?;
    Ok(out)
}

/// `QueueDetach` for the handle `file`.
pub(super) fn detach_session(
    a: &Apps,
    file: WDFFILEOBJECT,
    queue: u32,
) -> Result<Vec<u8>, CtlError> {
    let session = a.with(|st| {
        let s = st.sessions.iter_mut().find(|s| s.file == file)?;
        let i = s.attached.iter().position(|q| *q == queue)?;
        s.attached.swap_remove(i);
        Some(Session {
            file,
            id: s.id,
            holder: s.holder,
            identity: Arc::clone(&s.identity),
            attached: Vec::new(),
        })
    });
    let session = session.ok_or(CtlError::NotFound)?;
    let orphaned = detach_from(&session, &[queue])?;
    // Only what waits in a queue left with no application: the handle keeps what it took.
    abandon(a, None, &orphaned);
    Ok(Vec::new())
}
