//! Where and how enipin logs: `tracing` events on stderr, filtered by `RUST_LOG` (default
//! `info`), as plain text, as JSON lines for collectors, or as journal lines.
//!
//! Under systemd stderr is the journal's stream, which stamps every line itself and reads a
//! leading `<N>` as the line's syslog priority (sd-daemon(3)): journal lines carry that prefix
//! and no timestamp, so `journalctl -p warning` shows warnings and errors only. The `log` records
//! of aya and aya-log reach the same subscriber (tracing-log).

use std::{fmt, os::fd::AsFd as _, os::unix::fs::MetadataExt as _};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    filter::LevelFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `journal` when stderr is the journal's stream (`$JOURNAL_STREAM` names it), else `text`.
    #[default]
    Auto,
    /// A timestamp, the level and the message.
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields.
    Json,
    /// `<N>` syslog priority prefixes (3 error, 4 warning, 6 info, 7 debug), no timestamp.
    Journal,
}

/// Installs the subscriber for the whole process; call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    // A second init (a test calling main twice) keeps the first subscriber: nothing to report.
    let _ = match resolve(format, journal_stream().as_deref(), stderr_id()) {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Journal => fmt.event_format(Journal).try_init(),
        LogFormat::Text | LogFormat::Auto => fmt.with_target(false).try_init(),
    };
}

/// `Auto` made concrete: journal lines only when `$JOURNAL_STREAM` ("DEV:INODE", decimal) is
/// stderr itself; a child whose stderr was redirected inherits the variable and gets text.
fn resolve(
    format: LogFormat,
    journal_stream: Option<&str>,
    stderr: Option<(u64, u64)>,
) -> LogFormat {
    if format != LogFormat::Auto {
        return format;
    }
    let named = journal_stream.and_then(|s| {
        let (dev, ino) = s.split_once(':')?;
        Some((dev.parse().ok()?, ino.parse().ok()?))
    });
    match (named, stderr) {
        (Some(n), Some(e)) if n == e => LogFormat::Journal,
        _ => LogFormat::Text,
    }
}

fn journal_stream() -> Option<String> {
    std::env::var("JOURNAL_STREAM").ok()
}

/// stderr's device and inode numbers (fstat).
fn stderr_id() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// sd-daemon(3)'s priority prefix for a level (TRACE has none lower than debug).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `<N>message fields...`: what the journal stamps and ranks itself.
struct Journal;

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(w, "<{}>", priority(*event.metadata().level()))?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_journal_only_when_the_stream_is_stderr() {
        let e = Some((64, 12345));
        assert_eq!(
            resolve(LogFormat::Auto, Some("64:12345"), e),
            LogFormat::Journal
        );
        // Inherited by a child whose stderr is a pipe or a file: text.
        assert_eq!(resolve(LogFormat::Auto, Some("64:999"), e), LogFormat::Text);
        assert_eq!(resolve(LogFormat::Auto, None, e), LogFormat::Text);
        assert_eq!(resolve(LogFormat::Auto, Some("junk"), e), LogFormat::Text);
        assert_eq!(
            resolve(LogFormat::Auto, Some("64:12345"), None),
            LogFormat::Text
        );
        // An explicit choice wins.
        assert_eq!(
            resolve(LogFormat::Json, Some("64:12345"), e),
            LogFormat::Json
        );
        assert_eq!(resolve(LogFormat::Journal, None, None), LogFormat::Journal);
    }

    #[test]
    fn priorities_are_sd_daemons() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }
}
