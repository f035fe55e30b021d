//! The terminal stdout writes to, if it is one.

/// stdout's terminal width in columns (`None`: not a terminal, or it did not say).
pub(crate) fn columns() -> Option<u16> {
    // SAFETY: an all-zero winsize is valid; TIOCGWINSZ fills it or fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: fd 1 and a valid out-parameter; on a non-terminal the call fails with ENOTTY.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col)
}
