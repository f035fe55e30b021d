//! One enipin per network namespace. Two that differ in state directory, pin directory or
//! priority each read the other's protocol-229 rules as stale and delete them: two watchers
//! made 9,936 rule events in 10 s, without a word. The state directory's lock cannot see that
//! (another directory, another lock), so every changer also claims the namespace itself.
//!
//! The claim is a listening socket at the abstract unix address `@enipin`: abstract addresses
//! belong to a network namespace, so the bind fails in exactly the namespace that has a holder,
//! and the kernel releases it when the holder exits however it exits (no file to go stale, none
//! left in `/run`). The holder answers each connection with one line saying who it is (PID,
//! state and pin directories), which the refused one quotes.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    os::{
        fd::AsRawFd as _,
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixListener, UnixStream},
    },
    thread::JoinHandle,
    time::Duration,
};

/// The abstract address, per network namespace.
const NAME: &[u8] = b"enipin";

/// This namespace is claimed until dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    listener: UnixListener,
    server: Option<JoinHandle<()>>,
}

/// Why the namespace could not be claimed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    /// Another enipin holds it; what it says of itself.
    #[error("another enipin runs in this network namespace ({0})")]
    Held(String),
    #[error("claiming the network namespace (abstract socket @enipin): {0}")]
    Io(#[from] std::io::Error),
}

impl Claim {
    /// Claims the namespace; `about` is what a refused one is told (PID, directories).
    pub(crate) fn take(about: String) -> Result<Self, ClaimError> {
        let addr = SocketAddr::from_abstract_name(NAME)?;
        let listener = match UnixListener::bind_addr(&addr) {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                return Err(ClaimError::Held(holder(&addr)));
            }
            Err(e) => return Err(e.into()),
        };
        let serving = listener.try_clone()?;
        let server = std::thread::Builder::new()
            .name("enipin-claim".into())
            .spawn(move || serve(&serving, &about))?;
        Ok(Self {
            listener,
            server: Some(server),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Wakes the server's accept with an error: it returns, and the address is free once the
        // last descriptor closes.
        // SAFETY: plain syscall on a descriptor we own.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
    }
}

fn serve(listener: &UnixListener, about: &str) {
    for conn in listener.incoming() {
        match conn {
            Ok(mut c) => {
                let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = c.write_all(about.as_bytes());
            }
            Err(_) => return,
        }
    }
}

/// The enipin that holds this namespace now, as it says of itself; `None` when none does (a
/// connection, never a bind: asking takes nothing).
pub(crate) fn holder_now() -> Option<String> {
    let addr = SocketAddr::from_abstract_name(NAME).ok()?;
    UnixStream::connect_addr(&addr).ok()?;
    Some(holder(&addr))
}

/// What the holder says of itself (within 500 ms), or why it cannot be told.
fn holder(addr: &SocketAddr) -> String {
    let said = || -> std::io::Result<String> {
        let c = UnixStream::connect_addr(addr)?;
        c.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut s = String::new();
        c.take(512).read_to_string(&mut s)?;
        Ok(s)
    };
    match said() {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => "it did not say who it is".into(),
        Err(e) => format!("it did not say who it is: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread in a network namespace of its own (unshared, gone with the thread): taken,
    /// refused with the holder's words, and free again once dropped.
    #[test]
    fn one_claim_at_a_time_and_the_refused_one_hears_who() {
        std::thread::spawn(|| {
            // SAFETY: plain syscall; it moves this thread alone into a new network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            assert_eq!(holder_now(), None);
            let first = Claim::take("pid 1, state dir /a".into()).expect("the first claim");
            assert_eq!(holder_now().as_deref(), Some("pid 1, state dir /a"));
            match Claim::take("pid 2".into()) {
                Err(ClaimError::Held(who)) => assert_eq!(who, "pid 1, state dir /a"),
                other => panic!("{other:?}"),
            }
            drop(first);
            assert_eq!(holder_now(), None, "released");
            Claim::take("pid 3".into()).expect("free again");
        })
        .join()
        .unwrap();
    }
}
