//! The one BPF_PROG_TEST_RUN wrapper: the classifier (or the empty one beside it) run on a frame
//! with a `__sk_buff` context, and the TC verdicts it returns.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    programs::{SchedClassifier, TestRun as _, TestRunOptions, TestRunResult},
};

use crate::frames;

/// `TC_ACT_UNSPEC` (include/uapi/linux/pkt_cls.h): the classifier's "no verdict, carry on" (-1).
pub const TC_ACT_UNSPEC: u32 = -1i32 as u32;
/// `TC_ACT_REDIRECT`: what `bpf_redirect` returns when the redirect is set up.
pub const TC_ACT_REDIRECT: u32 = 7;

/// Runs the loaded program `prog` of `bpf` `repeat` times on `frame` as if it left by `ifindex`
/// (resolved in the calling thread's namespace: run inside the test namespace, `in_ns`).
pub fn test_run(
    bpf: &Ebpf,
    prog: &str,
    ifindex: u32,
    frame: &[u8],
    repeat: u32,
) -> Result<TestRunResult> {
    test_run_ctx(bpf, prog, &frames::skb_ctx(ifindex), frame, repeat)
}

/// [`test_run`] with a whole `__sk_buff` as context (GSO fields, ...).
pub fn test_run_ctx(
    bpf: &Ebpf,
    prog: &str,
    ctx: &[u8],
    frame: &[u8],
    repeat: u32,
) -> Result<TestRunResult> {
    test_run_out(bpf, prog, ctx, frame, repeat).map(|(r, _)| r)
}

/// [`test_run_ctx`], also returning the frame as the program left it (the last run's).
pub fn test_run_out(
    bpf: &Ebpf,
    prog: &str,
    ctx: &[u8],
    frame: &[u8],
    repeat: u32,
) -> Result<(TestRunResult, Vec<u8>)> {
    let p: &SchedClassifier = bpf
        .program(prog)
        .with_context(|| format!("no program {prog}"))?
        .try_into()?;
    // Room for what the program might add, 256 bytes.
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(ctx),
        repeat,
        ..TestRunOptions::new()
    };
    let r = {
        let _quiet = SignalsBlocked::new();
        p.test_run(opts)
    }
    .with_context(|| format!("test-run of {prog}"))?;
    out.truncate(r.data_size_out as usize);
    Ok((r, out))
}

/// Every signal blocked in the calling thread while this lives. The kernel stops a long repeat
/// with EINTR when a signal is pending for the running thread (the SIGCHLD of another test's
/// child, once a handler is installed: tokio's process support), after part of the runs, which
/// the counters have already seen: with the signals blocked here, the process's signals go to
/// its other threads, and a test-run always completes its `repeat`.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data, filled by sigfillset; pthread_sigmask on this thread.
        unsafe {
            let (mut all, mut old) = (std::mem::zeroed(), std::mem::zeroed());
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            Self(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on the same thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}
