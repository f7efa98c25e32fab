//! Where the log goes: standard error, written the way nginx writes its access log with
//! `buffer=64k flush=1s`.
//!
//! A log line is appended to an in-memory buffer under an uncontended lock: no system call, no
//! thread woken. The buffer is written out when it holds [`BUFFER_BYTES`], by a thread that wakes
//! every [`FLUSH_INTERVAL`], and when the guard [`init`] returns is dropped at exit (after a
//! graceful shutdown, so the last requests' lines are kept). A warning or an error is written at
//! once, with whatever is buffered before it, so an operator sees trouble when it happens and in
//! order. On a terminal every line is written at once.
//!
//! The cost of this design: a crash (not a SIGTERM) loses up to a second of request lines, as
//! nginx's buffered access log does. tracing-appender's non-blocking writer, used before, handed
//! every line to a writer thread: one `write` per line plus the wake-ups and spinning of its
//! channel (measured: about 0.9 `write`, 0.7 `sched_yield` and 0.2 `futex` per gateway request,
//! `strace -c -f`).

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use keygate::config::LogFormat;

/// Buffered bytes that are written out at once.
pub const BUFFER_BYTES: usize = 64 * 1024;
/// The longest a buffered line waits.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The buffer and where it goes.
struct Shared<W: Write> {
    state: Mutex<(Vec<u8>, W)>,
    /// Every line at once (standard error is a terminal).
    immediate: bool,
}

impl<W: Write> Shared<W> {
    fn append(&self, bytes: &[u8], urgent: bool) {
        let Ok(mut state) = self.state.lock() else { return };
        let (buffer, out) = &mut *state;
        buffer.extend_from_slice(bytes);
        if urgent || self.immediate || buffer.len() >= BUFFER_BYTES {
            write_out(buffer, out);
        }
    }

    fn flush(&self) {
        if let Ok(mut state) = self.state.lock() {
            let (buffer, out) = &mut *state;
            write_out(buffer, out);
        }
    }
}

/// Writes and empties `buffer`. A failed write loses those lines: there is nowhere to report it.
fn write_out<W: Write>(buffer: &mut Vec<u8>, out: &mut W) {
    if !buffer.is_empty() {
        let _ = out.write_all(buffer);
        let _ = out.flush();
        buffer.clear();
    }
}

/// The `MakeWriter` of the log: each event's formatted line goes to the shared buffer.
pub struct BufferedWriter<W: Write> {
    shared: Arc<Shared<W>>,
}

impl<W: Write> Clone for BufferedWriter<W> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<W: Write + Send + 'static> BufferedWriter<W> {
    /// A writer buffering for `out`, or writing every line at once when `immediate`.
    pub fn new(out: W, immediate: bool) -> Self {
        Self { shared: Arc::new(Shared { state: Mutex::new((Vec::with_capacity(BUFFER_BYTES), out)), immediate }) }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        self.shared.flush();
    }
}

/// One event's writer: `urgent` for a warning or an error.
pub struct Line<'a, W: Write> {
    shared: &'a Shared<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.shared.append(bytes, self.urgent);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BufferedWriter<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line { shared: &self.shared, urgent: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        // tracing orders levels by verbosity: WARN and ERROR are the ones at or below WARN.
        Line { shared: &self.shared, urgent: *meta.level() <= Level::WARN }
    }
}

/// Writes out what is buffered when dropped (at exit).
pub struct LogGuard(BufferedWriter<io::Stderr>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info,sqlx=warn`), `format`, the
/// buffered standard error. Keep the guard until the end of `main`.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = BufferedWriter::new(io::stderr(), terminal);
    if !terminal {
        let flusher = writer.clone();
        // Sleeps between flushes; ends with the process.
        let _ = std::thread::Builder::new().name("keygate-log-flush".into()).spawn(move || {
            loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flusher.flush();
            }
        });
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer.clone()).with_ansi(terminal);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    LogGuard(writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that counts its writes (each would be a system call).
    #[derive(Clone, Default)]
    struct Counting(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Counting {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
            inner.0.extend_from_slice(bytes);
            inner.1 += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Counting {
        fn seen(&self) -> (String, usize) {
            let inner = self.0.lock().expect("not poisoned");
            (String::from_utf8_lossy(&inner.0).into_owned(), inner.1)
        }
    }

    fn line(writer: &BufferedWriter<Counting>, urgent: bool, text: &str) {
        let mut line = Line { shared: &writer.shared, urgent };
        line.write_all(text.as_bytes()).expect("append");
    }

    #[test]
    fn lines_wait_in_the_buffer_until_a_flush() {
        let out = Counting::default();
        let writer = BufferedWriter::new(out.clone(), false);
        line(&writer, false, "one\n");
        line(&writer, false, "two\n");
        assert_eq!(out.seen(), (String::new(), 0), "nothing written yet");
        writer.flush();
        assert_eq!(out.seen(), ("one\ntwo\n".to_owned(), 1), "both lines in one write");
        writer.flush();
        assert_eq!(out.seen().1, 1, "an empty buffer writes nothing");
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let out = Counting::default();
        let writer = BufferedWriter::new(out.clone(), false);
        let text = "x".repeat(1000) + "\n";
        let lines = BUFFER_BYTES / text.len() + 1;
        for _ in 0..lines {
            line(&writer, false, &text);
        }
        let (written, writes) = out.seen();
        assert_eq!((written.len(), writes), (lines * text.len(), 1), "one write of everything so far");
    }

    #[test]
    fn a_warning_goes_out_at_once_after_what_came_before() {
        let out = Counting::default();
        let writer = BufferedWriter::new(out.clone(), false);
        line(&writer, false, "request\n");
        line(&writer, true, "WARN store down\n");
        assert_eq!(out.seen(), ("request\nWARN store down\n".to_owned(), 1));
    }

    #[test]
    fn on_a_terminal_every_line_goes_out_at_once() {
        let out = Counting::default();
        let writer = BufferedWriter::new(out.clone(), true);
        line(&writer, false, "one\n");
        assert_eq!(out.seen(), ("one\n".to_owned(), 1));
    }
}
