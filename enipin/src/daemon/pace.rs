//! When `watch` reconciles after events: at once on the first event of a burst (the leading
//! edge), then once more for everything that arrived while that reconcile ran (the trailing
//! edge), after a short quiet period so the rest of a burst is one reconcile, not one each.
//!
//! A fixed quiet period before every reconcile made every restore wait for it: a deleted rule
//! was back after about 200 ms, 190 of them waiting. A reconcile of the lab's two ENIs takes
//! about 10 ms, so the leading edge restores within about 10 ms. The kernel announces each of
//! 400 addresses added by one `ip -batch` within a few ms of each other: the leading reconcile
//! takes the first, the events read after it (queued while it ran) start the trailing edge, and
//! a 10 ms quiet period lets the rest of the burst arrive before the one follow-up.

use std::time::{Duration, Instant};

/// Events not yet reconciled, and when the last reconcile ended.
#[derive(Debug, Default)]
pub(crate) struct Edges {
    /// The first and the latest event since the last successful reconcile began.
    pending: Option<(Instant, Instant)>,
    /// When the last reconcile (successful or not) ended.
    ended: Option<Instant>,
}

impl Edges {
    /// An event that may need a reconcile (not an echo of enipin's own change) was read.
    pub(crate) fn event(&mut self, now: Instant) {
        let first = self.pending.map_or(now, |(first, _)| first);
        self.pending = Some((first, now));
    }

    /// Whether a reconcile is due because of events (not the periodic one).
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// When the reconcile for the pending events is due: at the first event when it came after
    /// a quiet stretch of `quiet` since the last reconcile; otherwise `quiet` after the latest
    /// event, but no later than `max_delay` after the first (a constant stream of events still
    /// gets a reconcile).
    pub(crate) fn due(&self, quiet: Duration, max_delay: Duration) -> Option<Instant> {
        let (first, last) = self.pending?;
        if self.ended.is_none_or(|ended| first >= ended + quiet) {
            return Some(first);
        }
        Some((last + quiet).min(first + max_delay))
    }

    /// A reconcile that started at `started` succeeded and ended `now`: the events read before
    /// it began are handled (those read since were queued while it ran: they stay pending).
    pub(crate) fn reconciled(&mut self, started: Instant, now: Instant) {
        if self.pending.is_some_and(|(_, last)| last <= started) {
            self.pending = None;
        }
        self.ended = Some(now);
    }

    /// A reconcile failed and ended `now`: it is due again (its events stay pending, and a
    /// periodic one becomes pending), when the caller's backoff allows.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.pending.get_or_insert((now, now));
        self.ended = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(2);

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    #[test]
    fn the_first_event_after_a_quiet_stretch_reconciles_at_once() {
        let t = Instant::now();
        let mut e = Edges::default();
        assert_eq!(e.due(QUIET, MAX), None);
        e.event(t);
        assert_eq!(e.due(QUIET, MAX), Some(t));
        // More of the burst read before the reconcile starts: still at once.
        e.event(ms(t, 1));
        assert_eq!(e.due(QUIET, MAX), Some(t));
        e.reconciled(ms(t, 1), ms(t, 11));
        assert!(!e.is_pending());
        // Long after: a leading edge again.
        e.event(ms(t, 500));
        assert_eq!(e.due(QUIET, MAX), Some(ms(t, 500)));
    }

    #[test]
    fn what_arrives_during_a_reconcile_is_one_follow_up_after_a_quiet_period() {
        let t = Instant::now();
        let mut e = Edges::default();
        e.event(t);
        e.reconciled(t, ms(t, 10));
        // Queued while it ran, read as it ended: the trailing edge waits for quiet.
        e.event(ms(t, 10));
        assert_eq!(e.due(QUIET, MAX), Some(ms(t, 20)));
        e.event(ms(t, 15));
        assert_eq!(e.due(QUIET, MAX), Some(ms(t, 25)));
        e.reconciled(ms(t, 25), ms(t, 40));
        assert!(!e.is_pending());
    }

    #[test]
    fn a_constant_stream_still_reconciles_every_max_delay() {
        let t = Instant::now();
        let mut e = Edges::default();
        e.event(t);
        e.reconciled(t, ms(t, 5));
        for n in (5..3000).step_by(5) {
            e.event(ms(t, n));
        }
        assert_eq!(e.due(QUIET, MAX), Some(ms(t, 5) + MAX));
    }

    #[test]
    fn events_read_during_a_reconcile_stay_pending_and_failures_keep_them() {
        let t = Instant::now();
        let mut e = Edges::default();
        e.event(t);
        e.failed(ms(t, 10));
        assert!(e.is_pending());
        // The retry comes from the backoff; the edge itself is overdue.
        assert!(e.due(QUIET, MAX).is_some_and(|d| d <= ms(t, 20)));
        e.event(ms(t, 30));
        e.reconciled(ms(t, 20), ms(t, 40));
        assert!(e.is_pending(), "an event after the start was dropped");
        // A failed periodic reconcile (nothing pending) is retried too.
        let mut e = Edges::default();
        e.failed(t);
        assert!(e.due(QUIET, MAX).is_some());
    }
}
