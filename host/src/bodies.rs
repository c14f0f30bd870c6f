//! Large cached bodies sent with `sendfile(2)`.
//!
//! `writev` from the cache copies a body from user memory into the socket; nginx's `sendfile`
//! from the page cache does not. For bodies of [`LARGE`] bytes or more, khttpd makes one sealed
//! memfd copy per body, the first time it is sent, and sends from it with `sendfile`. The seals
//! make the file immutable, so a response can never mix old and new bytes; an entry that is
//! replaced gets a new body, hence a new file, and the old file goes when its body does.
//! Cost: large bodies are held twice (the engine's copy and the memfd).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::sys;

/// Body pieces at least this large go out with `sendfile`.
pub(crate) const LARGE: usize = 32 * 1024;

/// A body (weakly: it tells whether the body at an address is still the same one) and its file.
type Sealed = (Weak<Vec<u8>>, Arc<OwnedFd>);

/// Sealed memfds by body, shared by the workers.
#[derive(Default)]
pub(crate) struct BodyFiles {
    /// Keyed by the body's address.
    files: Mutex<HashMap<usize, Sealed>>,
}

impl BodyFiles {
    /// The sealed file for `body`, made on first use; `None` if it cannot be made (the caller
    /// then falls back to `writev`).
    pub(crate) fn file_for(&self, body: &Arc<Vec<u8>>) -> Option<Arc<OwnedFd>> {
        let key = Arc::as_ptr(body) as usize;
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((weak, fd)) = files.get(&key)
            && weak.upgrade().is_some_and(|b| Arc::ptr_eq(&b, body))
        {
            return Some(Arc::clone(fd));
        }
        let fd = Arc::new(sys::sealed_memfd(body).ok()?);
        files.insert(key, (Arc::downgrade(body), Arc::clone(&fd)));
        Some(fd)
    }

    /// Drops the files of bodies that no longer exist.
    pub(crate) fn purge(&self) {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.retain(|_, (weak, _)| weak.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::BodyFiles;

    #[test]
    fn one_sealed_file_per_live_body() {
        let files = BodyFiles::default();
        let body = Arc::new(vec![5u8; 100_000]);
        let a = files.file_for(&body).unwrap();
        let b = files.file_for(&body).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "made once");
        let mut f = std::fs::File::from(a.try_clone().unwrap());
        // The descriptor shares the offset the write left at the end (sendfile passes offsets).
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert!(
            back == *body,
            "the file holds the body ({} bytes read)",
            back.len()
        );
        // Sealed: it cannot be written.
        assert!(std::io::Write::write_all(&mut f, b"x").is_err());
        drop(body);
        files.purge();
        assert!(files.files.lock().unwrap().is_empty());
    }
}
